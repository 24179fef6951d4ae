"""medtl fine-tuning an nnssl-layout ResEnc against nnU-Net's ResEnc preset, side by side.

Run it with medtl's environment; nnU-Net runs from its own (``make bench-transfer`` builds
it at ``benchmarks/.venv-nnunet``, as ``make bench`` does)::

    .venv/bin/python benchmarks/compare_transfer.py                 # the demo, 2 and 4 min
    .venv/bin/python benchmarks/compare_transfer.py --budgets 5,10  # longer budgets

What it does, in order (every command's output goes to ``<work>/logs/``):

1. **Data.** The demo is ingested by medtl, split into medtl's patient-grouped folds and
   exported to nnU-Net with the same folds (``splits_final.json``), as ``make bench`` does.
2. **Plans.** ``medtl plan`` + ``medtl preprocess``, and
   ``nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncM`` (plans
   ``nnUNetResEncUNetMPlans``): nnU-Net's ResEnc M preset. The pinned nnunetv2 (2.8.1)
   has no nnssl fine-tuning, so nnU-Net's side trains that preset from scratch.
3. **The nnssl file.** medtl's supervised pretraining of the config's ``resencunet`` on
   the demo's labelled source set (one-off, shown apart), written as an nnssl
   ``checkpoint_final.pth`` with its ``adaptation_plan.json``
   (``benchmarks/nnssl_checkpoint.py``); every pretrained arm loads that file with
   ``pretrain.format: nnssl``.
4. **Throughput.** Training iterations/s of nnU-Net's trainer and of medtl's
   ``resencunet`` at nnU-Net's planned patch and batch.
5. **Dice at equal wall-clock budgets** (``--budgets``, minutes from launch): nnU-Net
   ResEnc M from scratch, medtl scratch and medtl finetune (from the nnssl file), each
   trained once to the largest budget, its model at each budget scored on the fold's
   held-out cases.
6. **Inference.** Seconds per case after start-up, TTA off, one fold model each.
7. **Parameters** of both networks.
8. **The workflow.** ``snakemake`` on the same config (every fold and arm), its
   pretrained arms loading the nnssl file; the report's paired comparison
   finetune − scratch goes into the table's notes.
9. **Report.** The table, written into ``docs/benchmarks.md`` between its
   ``bench-transfer:start`` / ``bench-transfer:end`` markers, with the CPU other
   processes used (not written from a busy machine: see ``bench_quiet``);
   ``<work>/results.json`` holds every number.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench_common import (
    HERE,
    Bench,
    bench_parser,
    finish_args,
    load_config,
    measured_run,
    versions,
)
from bench_data import prepare, preprocess
from bench_medtl import budgets, inference, pretrain, throughput
from bench_nnunet import install_trainer
from bench_table import publish
from bench_workflow import run_workflow
from nnssl_checkpoint import write_from_medtl
from transfer_table import END, HEADING, START, transfer_markdown

PARTS = "throughput,budgets,inference,workflow"

# nnU-Net's network from its plans, built in its own environment: its parameter count.
_NNUNET_PARAMS = (
    "import json, sys\n"
    "from nnunetv2.utilities.get_network_from_plans import get_network_from_plans\n"
    "a = json.load(open(sys.argv[1]))\n"
    "net = get_network_from_plans(a['network_class_name'], a['arch_kwargs'],\n"
    "    a['_kw_requires_import'], 1, int(sys.argv[2]), deep_supervision=True)\n"
    "print(sum(p.numel() for p in net.parameters()))\n"
)


def parse_args(argv=None) -> argparse.Namespace:
    ap = bench_parser(
        __doc__,
        config=HERE / "config_transfer.yaml",
        work=HERE / "work-transfer",
        budgets="2,4",
        probe_steps=4,
        only=PARTS,
        repeats=3,
        infer_repeats=3,
    )
    ap.add_argument(
        "--planner", default="nnUNetPlannerResEncM", help="nnU-Net's planner (its ResEnc M)"
    )
    ap.add_argument(
        "--plans", default="nnUNetResEncUNetMPlans", help="the plans identifier it writes"
    )
    ap.add_argument(
        "--nnunet-iters",
        type=int,
        default=2,
        help="nnU-Net's training iterations per epoch (its snapshot granularity; ResEnc M "
        "plans a batch of 20 for the demo, about 45 s an iteration on 2 CPU cores)",
    )
    ap.add_argument(
        "--probe-epochs", type=int, default=2, help="epochs of nnU-Net's throughput probe"
    )
    ap.add_argument(
        "--default-probe-steps",
        type=int,
        default=30,
        help="steps of the probe of medtl's own configuration, which sizes the schedules of "
        "its budget runs (--probe-steps: the probes at nnU-Net's batch of 20)",
    )
    ap.set_defaults(data=None, modality=None)  # the demo: its own data and modality
    return finish_args(ap.parse_args(argv))


def parameters(b: Bench, cfg: dict, pre: dict) -> dict:
    """Parameters of medtl's network (as the config builds it) and of nnU-Net's (as its
    plans build it, deep-supervision heads included: DNA builds them in both)."""
    from medtl.models.nnunet_networks import residual_encoder_unet

    n_out = len(cfg["classes"]) + 1
    net = residual_encoder_unet(1, n_out, cfg["model"]["features"])
    arch = b.work / "nnunet" / "architecture.json"
    arch.write_text(json.dumps(pre["nnunet_architecture"]))
    out = subprocess.run(
        [b.nnunet_bin / "python", "-c", _NNUNET_PARAMS, arch, str(n_out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"medtl": sum(p.numel() for p in net.parameters()), "nnunet": int(out.stdout)}


def nnssl_weights(b: Bench, cfg: dict, d: dict) -> tuple[dict, Path]:
    """medtl's pretraining, and its network written as an nnssl checkpoint."""
    pre = pretrain(b, cfg, d)
    path = write_from_medtl(
        Path(pre["checkpoint"]), b.work / "medtl" / "plan.json", b.work / "medtl" / "nnssl"
    )
    b.say(f"nnssl checkpoint written: {path}")
    return pre, path


def with_weights(cfg: dict, path: Path) -> dict:
    """``cfg`` with ``pretrain.checkpoint`` the nnssl file (format nnssl)."""
    return {**cfg, "pretrain": {**cfg["pretrain"], "checkpoint": str(path), "format": "nnssl"}}


def measure(b: Bench, cfg: dict, res: dict) -> None:
    """Every part of the run, its numbers into ``res``."""
    a = b.args
    d = prepare(b, cfg)
    pre = preprocess(b, cfg, d)
    res["nnunet_plan"] = {
        "patch_zyx": pre["nnunet_patch_zyx"],
        "batch": pre["nnunet_batch"],
        "features": pre["nnunet_features"],
        "strides_zyx": pre["nnunet_strides_zyx"],
    }
    res["parameters"] = parameters(b, cfg, pre)
    res["pretrain"], weights = nnssl_weights(b, cfg, d)
    tx = with_weights(cfg, weights)
    if a.only & {"throughput", "budgets", "inference"}:
        res["throughput"] = throughput(b, tx, d, pre)
    if a.only & {"budgets", "inference"}:
        res["budgets"] = budgets(b, tx, d, pre, res["throughput"], str(weights))
        report = b.work / "medtl" / "budget" / "finetune" / "load_report.json"
        if report.is_file():
            res["load_report"] = json.loads(report.read_text())
    if "inference" in a.only:
        res["inference"] = inference(b, tx, d, res["budgets"], ttas=(False,), onnx=False)
    if "workflow" in a.only:
        res["workflow"] = run_workflow(b, cfg, weights)


def main(argv=None) -> int:
    a = parse_args(argv)
    markers = {"start": START, "end": END, "heading": HEADING}
    if a.from_json:
        return publish(json.loads(Path(a.from_json).read_text()), transfer_markdown, a, **markers)
    b = Bench(a)
    if not (b.nnunet_bin / "nnUNetv2_train").is_file():
        sys.exit(f"nnU-Net not found in {a.nnunet_venv}. How to fix: `make bench-transfer`")
    cfg = load_config(Path(a.config))
    a.arms = [arm for arm in cfg["arms"]]
    start = time.perf_counter()
    install_trainer(b)
    res = b.results
    res.update(
        data="the built-in demo",
        fold=a.fold,
        arms=a.arms,
        plans=a.plans,
        nnunet_iters=a.nnunet_iters,
        model=cfg["model"],
        train=cfg["train"],
        versions=versions(b),
    )
    measured_run(b, start, lambda: measure(b, cfg, res))
    return publish(res, transfer_markdown, a, **markers)


if __name__ == "__main__":
    sys.exit(main())
