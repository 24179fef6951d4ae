"""ONNX export (medtl export-onnx) and ONNX Runtime inference (medtl predict --engine onnxruntime).

A tiny finished run is built without the workflow: a plan and two seeded-random
BasicUNets saved as seeds 1 and 2 of fold 0 of arm ``finetune`` (the ensemble
``medtl predict`` averages). Both are exported; ONNX Runtime must then give the
probabilities PyTorch gives, up to float32 rounding.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medtl.cli.main import app
from medtl.config import ModelConfig, PredictConfig, to_dict
from medtl.export.onnx import export_onnx
from medtl.kernel.errors import InputError
from medtl.kernel.files import atomic_torch_save
from medtl.layout import checkpoint_file, trust_file
from medtl.models.networks import build_network
from medtl.models.onnx_model import MANIFEST, OnnxNetwork, load_onnx_export
from medtl.predict.inference import predict_probabilities
from medtl.preprocess.case import PreprocessedCase
from medtl.preprocess.plan import Plan
from medtl.trust.decision import TrustRule

FEATURES = (4, 4, 8, 8, 16, 4)
PATCH = [32, 32, 16]
DEMO = (48, 48, 24)  # a demo-sized case: several overlapping windows of PATCH
SEEDS = (1, 2)
# Parity tolerance. Both engines compute in float32 (unit round-off 2**-24 ≈ 6e-8) but
# sum each convolution's 27 × channels products and reduce instance norms in different
# orders (ONNX Runtime's MLAS kernels against PyTorch's oneDNN), so every one of the
# network's ~20 layers may change the last bits. Such errors grow with depth and the
# logits' magnitude to about 1e3 round-offs; a softmax probability moves by at most half
# its logits' change, so 1e-4 bounds it with room, while a real mismatch (a wrong weight,
# axis or normalisation) moves probabilities by 1e-2 or more. (Observed: about 1e-6.)
ATOL = 1e-4

runner = CliRunner()


def _image(seed: int, shape=DEMO) -> np.ndarray:
    """Bright noisy balls on a zero background."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    image = np.zeros(shape, np.float32)
    for _ in range(5):
        centre = rng.uniform([6, 6, 4], np.array(shape) - [6, 6, 4])
        image[((grid - centre) ** 2).sum(-1) < rng.uniform(4.0, 10.0) ** 2] += 100.0
    return image + rng.normal(0.0, 5.0, shape).astype(np.float32)


def _case(seed: int = 0) -> PreprocessedCase:
    image = _image(seed)
    return PreprocessedCase(((image - image.mean()) / image.std())[None], None, {})


def _network(seed: int) -> torch.nn.Module:
    """A seeded random BasicUNet whose argmax splits the demo case about 40/60.

    Random weights give an almost constant argmax; shifting the head's foreground bias
    gives masks with long borders, on which two engines could disagree (a hard test).
    """
    torch.manual_seed(seed)
    net = build_network(ModelConfig(features=FEATURES), 1, 2).eval()
    probs = predict_probabilities([net], _case(), PATCH, PredictConfig(), torch.device("cpu"))
    margin = torch.log(probs[1]) - torch.log(probs[0])
    with torch.no_grad():
        net.final_conv.bias[1] -= float(torch.quantile(margin.flatten(), 0.6))
    return net


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """``(results, networks)``: a plan and seeds 1 and 2 of fold 0 of arm ``finetune``."""
    results = tmp_path_factory.mktemp("onnx-run") / "results"
    Plan(
        modality="MR",
        target_spacing=(2.0, 2.0, 4.0),
        normalization="zscore",
        intensity={"mean": 100.0, "std": 30.0, "p005": 40.0, "p995": 180.0},
        crop_foreground=False,
        median_shape=DEMO,
        n_cases=2,
        classes={"1": "blob"},
    ).save(results / "preprocess" / "plan.json")
    networks = []
    for seed in SEEDS:
        net = _network(seed)
        networks.append(net)
        payload = {
            "format": "medtl",
            "state_dict": net.state_dict(),
            "model": to_dict(ModelConfig(features=FEATURES)),
            "num_classes": 2,
            "in_channels": 1,
            "classes": {1: "blob"},
            "patch_size": PATCH,
            "tags": {"arm": "finetune", "fold": 0, "seed": seed},
        }
        path = checkpoint_file(results, "finetune", seed, 0)
        path.parent.mkdir(parents=True)
        atomic_torch_save(payload, path)
    return results, networks


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx-export") / "onnx"
    return export_onnx(finished_run[0], "finetune", out).parent


def test_manifest_describes_the_ensemble(exported):
    manifest = json.loads((exported / MANIFEST).read_text())
    assert manifest["format"] == "medtl-onnx" and manifest["arm"] == "finetune"
    assert [(m["seed"], m["fold"]) for m in manifest["members"]] == [(1, 0), (2, 0)]
    assert sorted(p.name for p in exported.glob("*.onnx")) == [
        "finetune_seed1_fold0.onnx",
        "finetune_seed2_fold0.onnx",
    ]
    assert manifest["patch_size"] == PATCH and manifest["divisor"] == 16
    assert manifest["classes"] == {"1": "blob"} and manifest["plan"]["normalization"] == "zscore"
    assert manifest["predict"] == {"overlap": 0.5, "mode": "gaussian", "tta": False,
                                   "sw_batch_size": 4, "window": "patch"}  # fmt: skip
    assert manifest["calibration"] is None and manifest["postprocess"] is None
    assert set(manifest["versions"]) == {"medtl", "torch", "onnx", "onnx_opset"}


def test_onnxruntime_matches_pytorch(finished_run, exported):
    """The ensemble's probabilities and masks on a demo-sized case, both engines."""
    _, networks = finished_run
    sessions = [OnnxNetwork(m.path) for m in load_onnx_export(exported).members]
    case, cfg, cpu = _case(seed=7), PredictConfig(), torch.device("cpu")
    expected = predict_probabilities(networks, case, PATCH, cfg, cpu)
    found = predict_probabilities(sessions, case, PATCH, cfg, cpu)
    assert found.shape == expected.shape == (2, *DEMO)
    assert float((found - expected).abs().max()) < ATOL
    same = float((found.argmax(0) == expected.argmax(0)).float().mean())
    assert same >= 0.999
    foreground = float(expected.argmax(0).float().mean())
    assert 0.1 < foreground < 0.9  # the masks have borders to disagree on


def test_dynamic_batch_and_spatial_axes(finished_run, exported):
    """Other batch sizes and other multiples of the divisor run too."""
    net = finished_run[1][0]
    session = OnnxNetwork(load_onnx_export(exported).members[0].path)
    x = torch.randn(3, 1, 48, 32, 32)
    with torch.no_grad():
        assert float((session(x) - net(x)).abs().max()) < 1e-3  # logits, not probabilities


def test_predict_engine_onnxruntime_end_to_end(finished_run, exported, tmp_path):
    """``medtl predict`` on a NIfTI file: the same masks with either engine."""
    results, _ = finished_run
    scan = tmp_path / "scan.nii.gz"
    affine = np.diag([-2.0, -2.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(_image(3, (40, 44, 20)), affine), scan)
    masks = {}
    for engine, model in (("torch", results), ("onnxruntime", exported)):
        out = tmp_path / engine
        args = ["predict", str(scan), "--model", str(model), "--out", str(out),
                "--engine", engine, "--device", "cpu", "--quiet"]  # fmt: skip
        if engine == "torch":
            args += ["--arm", "finetune"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        masks[engine] = np.asarray(nib.load(next(out.glob("*.nii.gz"))).dataobj)
        assert (out / "predictions.tsv").is_file()
    assert masks["torch"].shape == masks["onnxruntime"].shape
    assert (masks["torch"] == masks["onnxruntime"]).mean() >= 0.999
    assert 0 < masks["torch"].mean() < 1


def test_onnxruntime_needs_an_export_first(finished_run, tmp_path):
    results, _ = finished_run
    with pytest.raises(InputError, match="medtl export-onnx --model .* --arm ARM --out"):
        from medtl.predict.onnx_engine import onnx_engine

        onnx_engine("onnxruntime", results)
    (tmp_path / "in").mkdir()
    result = runner.invoke(
        app,
        ["predict", str(tmp_path / "in"), "--model", str(results), "--out", str(tmp_path / "m"),
         "--engine", "onnxruntime"],
    )  # fmt: skip
    assert result.exit_code != 0 and "export-onnx" in result.output


def test_a_replaced_model_file_is_refused(finished_run, exported, tmp_path):
    """A manifest and ONNX files of different exports do not mix (SHA-256 check)."""
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(exported, mixed)
    first, second = sorted(mixed.glob("*.onnx"))
    shutil.copy(second, first)
    with pytest.raises(InputError, match="SHA-256 .* differs"):
        load_onnx_export(mixed)
    (mixed / first.name).unlink()
    with pytest.raises(InputError, match="missing"):
        load_onnx_export(mixed)
    with pytest.raises(InputError, match="not an export of medtl export-onnx"):
        load_onnx_export(tmp_path)


def test_torch_engine_refuses_an_export(exported):
    from medtl.predict.onnx_engine import onnx_engine

    with pytest.raises(InputError, match="add --engine onnxruntime"):
        onnx_engine("torch", exported)
    with pytest.raises(InputError, match="unknown engine"):
        onnx_engine("tensorrt", exported)


def test_the_arms_trust_travels_with_the_export(finished_run, tmp_path):
    """The manifest's ``calibration`` is the arm's trust rule, and both engines apply it."""
    results, _ = finished_run
    rule = TrustRule(1.7, "volume_cv", 1, 0.0, 0.8, "youden")  # flags every case
    path = trust_file(results, "finetune")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rule": rule.as_dict()}))
    try:
        folder = export_onnx(results, "finetune", tmp_path / "onnx").parent
    finally:
        path.unlink()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert TrustRule.from_dict(manifest["calibration"]) == rule
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(_image(5, (40, 44, 20)), np.diag([2.0, 2.0, 4.0, 1.0])), scan)
    path.write_text(json.dumps({"rule": rule.as_dict()}))
    try:
        tables = {}
        for engine, model in (("torch", results), ("onnxruntime", folder)):
            out = tmp_path / f"out-{engine}"
            args = ["predict", str(scan), "--model", str(model), "--out", str(out),
                    "--engine", engine, "--device", "cpu", "--quiet"]  # fmt: skip
            result = runner.invoke(app, args + (["--arm", "finetune"] if engine == "torch" else []))
            assert result.exit_code == 0, result.output
            tables[engine] = pd.read_csv(out / "predictions.tsv", sep="\t")
    finally:
        path.unlink()
    for table in tables.values():
        assert table["flag"].tolist() == [True] and table["risk"].iloc[0] >= 0.0
    # The risk is the CV of the two members' volumes (thousands of voxels each): a voxel
    # whose argmax the engines' float32 rounding flips moves it by about 1e-4.
    assert tables["onnxruntime"]["risk"].iloc[0] == pytest.approx(
        tables["torch"]["risk"].iloc[0], abs=1e-3
    )
