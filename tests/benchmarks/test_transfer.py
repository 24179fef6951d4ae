"""``make bench-transfer``'s pure parts: the nnssl file it writes from medtl's pretraining,
its options, its table from a canned results dict, and the docs update between its markers.

The run itself needs nnU-Net and half an hour; these tests check what turns its
measurements into the published table, and that medtl reads the file it writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import compare_transfer  # benchmarks/, on the path by pyproject.toml's pytest settings
import pytest
import torch
from bench_table import write_doc
from nnssl_checkpoint import write_from_medtl
from transfer_table import END, HEADING, START, transfer_markdown, transfer_rows

from medtl.config import ModelConfig
from medtl.models.networks import build_network, get_architecture
from medtl.models.nnunet_networks import canonical_state, residual_encoder_unet
from medtl.models.transfer import load_pretrained
from tests.benchmarks.canned import QUIET, VERSIONS

FEATURES = [4, 8, 16]


def _medtl_pretraining(folder: Path) -> tuple[Path, Path, torch.nn.Module]:
    """``checkpoint.pt`` as ``medtl pretrain`` writes it (canonical names, each tensor once)
    of a 3-class resencunet, and the target's ``plan.json``."""
    folder.mkdir(parents=True)
    torch.manual_seed(3)
    net = residual_encoder_unet(1, 3, FEATURES)
    payload = {
        "format": "medtl",
        "state_dict": {k: v.clone() for k, v in canonical_state(net).items()},
        "model": {"name": "resencunet", "features": FEATURES, "dropout": 0.0},
        "num_classes": 3,
        "in_channels": 1,
        "classes": {"1": "source class 1", "2": "source class 2"},
        "patch_size": [32, 24, 16],
        "step": 10,
        "val_dice": 0.5,
        "tags": {"stage": "pretrain"},
    }
    torch.save(payload, folder / "checkpoint.pt")
    plan = {"target_spacing": [1.5, 1.5, 3.0], "normalization": "zscore"}
    (folder / "plan.json").write_text(json.dumps(plan))
    return folder / "checkpoint.pt", folder / "plan.json", net


def test_written_nnssl_file_loads_the_whole_encoder(tmp_path: Path) -> None:
    ckpt, plan, source = _medtl_pretraining(tmp_path / "pretrain")
    path = write_from_medtl(ckpt, plan, tmp_path / "nnssl")
    stored = torch.load(path, weights_only=True)
    assert set(stored) == {"network_weights", "init_args", "trainer_name", "nnssl_adaptation_plan"}
    # DNA's aliases are there, as in nnssl's own files
    assert "encoder.stem.convs.0.all_modules.0.weight" in stored["network_weights"]
    assert "decoder.encoder.stages.0.blocks.0.conv1.conv.weight" in stored["network_weights"]
    beside = json.loads((tmp_path / "nnssl" / "adaptation_plan.json").read_text())
    arch = beside["architecture_plans"]
    assert arch["arch_class_name"] == "ResidualEncoderUNet"
    assert arch["arch_kwargs"]["features_per_stage"] == FEATURES
    assert arch["arch_kwargs"]["n_blocks_per_stage"] == [1, 3, 4]
    config = next(iter(beside["pretrain_plan"]["configurations"].values()))
    # nnssl writes spacing and patch in its arrays' (z, y, x) order
    assert config["spacing"] == [3.0, 1.5, 1.5] and config["patch_size"] == [16, 24, 32]
    assert config["normalization_schemes"] == ["ZScoreNormalization"]

    torch.manual_seed(11)
    net = build_network(ModelConfig(name="resencunet", features=tuple(FEATURES)), 1, 2)
    arch = get_architecture("resencunet")
    report = load_pretrained(net, arch, path, fmt="nnssl")
    encoder = [k for k in canonical_state(net) if arch.part_of(k) == "encoder"]
    assert report.format == "nnssl" and report.fraction_loaded == 1.0
    assert sorted(report.loaded) == sorted(encoder) and not report.missing
    mine, theirs = net.state_dict(), source.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in encoder)
    note = next(n for n in report.notes if n.startswith("nnssl adaptation plan"))
    assert "spacing [3.0, 1.5, 1.5] (median)" in note


def test_writer_refuses_another_network(tmp_path: Path) -> None:
    ckpt, plan, _ = _medtl_pretraining(tmp_path / "pretrain")
    payload = torch.load(ckpt, weights_only=True)
    payload["model"]["name"] = "basicunet"
    torch.save(payload, ckpt)
    with pytest.raises(ValueError, match="resencunet, found format 'medtl', model 'basicunet'"):
        write_from_medtl(ckpt, plan, tmp_path / "nnssl")


def test_options_and_their_defaults() -> None:
    a = compare_transfer.parse_args([])
    assert a.budgets == [2.0, 4.0] and a.only == {"throughput", "budgets", "inference", "workflow"}
    assert (a.planner, a.plans) == ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans")
    assert Path(a.config).name == "config_transfer.yaml" and a.data is None
    # a few steps at nnU-Net's batch of 20 give a rate; medtl's own schedule needs more
    assert (a.probe_steps, a.default_probe_steps) == (4, 30)
    a = compare_transfer.parse_args(["--budgets", "10,5", "--nnunet-iters", "5"])
    assert a.budgets == [5.0, 10.0] and a.nnunet_iters == 5


def _results(others: float = 0.02) -> dict:
    infer = {"s_per_case": 0.5, "startup_s": 10.0, "s_per_case_runs": [0.4, 0.5, 0.7]}
    return {
        "versions": VERSIONS,
        "data": "demo",
        "fold": 0,
        "total_min": 40.0,
        "arms": ["scratch", "finetune"],
        "plans": "nnUNetResEncUNetMPlans",
        "nnunet_iters": 2,
        "model": {"name": "resencunet", "features": [32, 64, 128, 256]},
        "train": {"patch_size": [32, 32, 16], "batch_size": 2},
        "nnunet_plan": {
            "patch_zyx": [24, 48, 48],
            "batch": 20,
            "features": [32, 64, 128, 256],
            "strides_zyx": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        },
        "parameters": {"medtl": 25.9e6, "nnunet": 25.8e6},
        "pretrain": {"timing": {"wall_s": 120.0}},
        "load_report": {"fraction_loaded": 1.0},
        "throughput": {
            "medtl_same_patch": {"it_per_s": 0.025, "samples_per_s": 0.5},
            "nnunet": {"it_per_s": 0.02, "samples_per_s": 0.4, "patch": [48, 48, 24], "batch": 20},
        },
        "budgets": {
            "budgets_min": [2, 4],
            "test_cases": 7,
            "nnunet": {
                "dice": [float("nan"), 0.1],
                "epochs_run": 2,
                "epochs_planned": 2,
                "marks_at_s": [163.1, 230.5],
            },
            "scratch": {"dice": [0.5, 0.7], "steps_run": 300, "steps_planned": 320},
            "finetune": {"dice": [0.6, 0.8], "steps_run": 290, "steps_planned": 320},
        },
        "inference": {"no_tta": {"medtl": infer, "nnunet": {"s_per_case": 1.0, "startup_s": 10.0}}},
        "workflow": {
            "wall_s": 600.0,
            "comparisons": [
                {
                    "arm": "finetune",
                    "reference": "scratch",
                    "mean_diff": 0.05,
                    "ci_low": -0.01,
                    "ci_high": 0.11,
                    "p_value": 0.09,
                    "n": 20,
                    "statement": "finetune changed mean Dice by +0.050.",
                }
            ],
            "noise_floor": [],
        },
        "quiet": {**QUIET, "others_share": others, "others_cpu_s": others * 2 * 2400},
    }


def test_table_rows_from_canned_results() -> None:
    rows = {r["measure"]: r for r in transfer_rows(_results())}
    fine = rows["Dice after 4 min of training: medtl finetune, from the nnssl file"]
    assert fine["medtl"] == 0.8 and fine["peer"] == 0.1 and fine["ratio"] == pytest.approx(8)
    assert rows["Dice after 2 min of training: medtl scratch"]["peer"] != 0.0  # NaN: no model
    assert rows["training iterations/s (patch [48, 48, 24], batch 20)"]["ratio"] == 1.25
    assert rows["inference s/case after start-up, TTA off"]["ratio"] == 0.5
    assert rows["parameters (millions)"]["medtl"] == pytest.approx(25.9)


def test_markdown_says_scratch_peer_paired_comparison_and_load() -> None:
    text = transfer_markdown(_results())
    assert "| Dice after 2 min of training: medtl scratch | 0.500 | – | – | higher |" in text
    assert "trained **from scratch**: the pinned nnunetv2 2.8.1 has no nnssl fine-tuning" in text
    assert "finetune − scratch: mean Dice difference +0.050 (95 % CI -0.010 to 0.110" in text
    assert "n = 20 cases" in text and "no run-variation verdict" in text
    assert "loaded 100 % of its encoder" in text
    assert "nnU-Net ran 2 of 2 planned epochs of 2 iterations" in text
    assert "saved at 163, 230 s after launch" in text
    assert (
        "(2.0 % of 2 cores over 40.0 min); load average (1 min) 0.30 before the start: quiet."
        in text
    )
    busy = transfer_markdown(_results(others=0.3))
    assert "**disturbed (others used 30.0 % of the CPU)**" in busy


def test_timed_rows_give_min_and_max_over_repeats() -> None:
    text = transfer_markdown(_results())
    # medtl's three repeats; nnU-Net's results hold no per-repeat values (an older run)
    assert (
        "| inference s/case after start-up, TTA off | 0.50 | 1.00 | 0.50 | lower | 0.40–0.70; – |"
        in text
    )
    assert "| parameters (millions) | 25.90 | 25.80 | 1.00 |  |  |" in text  # not a timing


def test_docs_markers_are_replaced_and_added(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- bench:start -->\nnnU-Net table\n<!-- bench:end -->\n")
    write_doc(doc, "first\n", START, END, HEADING)
    text = doc.read_text()
    assert "nnU-Net table" in text and f"{HEADING}\n\n{START}\nfirst\n{END}" in text
    doc.write_text(text.replace(END, END + "\n\nmore prose\n"))
    write_doc(doc, "second\n", START, END, HEADING)
    text = doc.read_text()
    assert "first" not in text and "second" in text and text.count(HEADING) == 1
    assert "nnU-Net table" in text and text.split(END)[1].strip() == "more prose"


def test_a_disturbed_run_is_not_written_into_the_docs(tmp_path: Path, capsys) -> None:
    doc, res = tmp_path / "benchmarks.md", tmp_path / "results.json"
    doc.write_text(f"# Benchmarks\n\n{START}\nold\n{END}\n")
    res.write_text(json.dumps(_results(others=0.3)))
    assert compare_transfer.main(["--from-json", str(res), "--out", str(doc)]) == 3
    assert "\nold\n" in doc.read_text() and "--allow-disturbed" in capsys.readouterr().err
    assert compare_transfer.main(["--from-json", str(res), "--out", str(doc),
                                  "--allow-disturbed"]) == 0  # fmt: skip
    assert "**disturbed (others used 30.0 % of the CPU)**" in doc.read_text()
