"""medtl against nnU-Net v2 on one data set, same folds, same cores: a table of ratios.

Run it with medtl's environment; nnU-Net runs from its own (``make bench`` builds it at
``benchmarks/.venv-nnunet``: nnU-Net pins another torch than medtl)::

    .venv/bin/python benchmarks/compare_nnunet.py                  # the demo
    .venv/bin/python benchmarks/compare_nnunet.py --data my_cases.tsv --modality CT

What it does, in order (every command's output goes to ``<work>/logs/``):

1. **Data.** The demo (or ``--data``: anything ``medtl ingest`` reads) is ingested by
   medtl, split into medtl's patient-grouped folds (``folds.json``), exported to
   nnU-Net's raw format, and the same folds are written as nnU-Net's
   ``splits_final.json``; the script checks both hold the same cases before training.
2. **Preprocessing.** ``medtl plan`` + ``medtl preprocess`` against
   ``nnUNetv2_plan_and_preprocess -c 3d_fullres``, each from scratch, ``--repeats`` times:
   wall, CPU and peak memory.
3. **Training throughput.** Iterations/s and samples/s at nnU-Net's planned patch and
   batch: nnU-Net's own trainer, and medtl with ``plainconvunet`` (nnU-Net's layer
   layout) at that patch and batch. medtl's own configuration is timed too.
4. **Dice at equal wall-clock budgets** (``--budgets``, minutes from launch, start-up and
   data loading included): nnU-Net, medtl's scratch arm and medtl's pretrained arm
   (``--arms``), each with its own default network and schedule sized to the largest
   budget; the model each tool would use at each budget (nnU-Net: its latest weights,
   medtl: its best validated ``best.pt``) predicts the fold's held-out cases. medtl's
   pretraining is a one-off cost, shown apart.
5. **Inference.** ``nnUNetv2_predict`` against ``medtl predict`` from the raw images of
   the held-out cases, one fold model each, TTA (mirroring) on and off, ``--repeats``
   times: seconds per case and Dice. The same medtl model is also exported once with
   ``medtl export-onnx`` (timed apart) and run by ``medtl predict --engine onnxruntime``
   on the same cases, TTA setting and threads, the engines alternating within each
   repeat: ONNX Runtime's seconds per case after start-up against eager PyTorch's on the
   CPU, and the fraction of voxels where the two engines' masks are identical.
6. **DICOM → NIfTI.** ``medtl convert`` against ``dcm2niix`` on a generated series set
   (``benchmarks/dicom_convert.py``).
7. **Start-up per command.** Each ``medtl`` command a workflow job runs, again in a
   fresh interpreter under ``python -X importtime`` on a finished micro run: its import
   time and whether it imported torch / MONAI (``benchmarks/startup.py``).
8. **Report.** One table of ratios (medtl / nnU-Net or dcm2niix; medians over repeats)
   with the targets, printed and written into ``docs/benchmarks.md`` between its
   ``bench:start`` / ``bench:end`` markers, with machine, versions and date;
   ``<work>/results.json`` holds every number.

No test enforces these figures: they depend on the machine. Ratios are measured in one
run, on the same data, folds and cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import startup
from bench_common import (
    HERE,
    ROOT,
    Bench,
    bench_parser,
    finish_args,
    load_config,
    measured_run,
    versions,
)
from bench_data import dicom, prepare, preprocess
from bench_medtl import budgets, inference, pretrain, throughput
from bench_nnunet import install_trainer
from bench_table import markdown, publish, ratio_rows, write_doc

# The table's parts, here too for those who import the harness (tests/benchmarks).
__all__ = ["main", "markdown", "parse_args", "ratio_rows", "write_doc"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = bench_parser(
        __doc__,
        config=ROOT / "config" / "config.yaml",
        work=HERE / "work",
        budgets="1,2.5,5",
        probe_steps=30,
        only="preprocess,throughput,budgets,inference,dicom,startup",
        repeats=3,
        infer_repeats=3,
    )
    ap.add_argument(
        "--data", help="your data set instead of the demo: anything `medtl ingest` reads"
    )
    ap.add_argument("--modality", help="CT or MR for NIfTI data (default: the config's)")
    ap.add_argument("--arms", default="scratch,finetune", help="medtl arms to train to the budgets")
    return finish_args(ap.parse_args(argv))


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.from_json:
        return publish(json.loads(Path(a.from_json).read_text()), markdown, a)
    b = Bench(a)
    if not (b.nnunet_bin / "nnUNetv2_train").is_file():
        sys.exit(
            f"nnU-Net not found in {a.nnunet_venv}. How to fix: `make bench` builds it, or "
            f"python3 -m venv {a.nnunet_venv} && {a.nnunet_venv}/bin/pip install "
            "torch==2.14.1 torchvision==0.29.1 nnunetv2"
        )
    cfg = load_config(Path(a.config))
    unknown = [arm for arm in a.arms if arm not in cfg["arms"]]
    if unknown:
        sys.exit(f"--arms: {unknown} not in the config's arms {list(cfg['arms'])}")
    start = time.perf_counter()
    res = measured_run(b, start, lambda: measure(a, b, cfg))
    return publish(res, markdown, a)


def measure(a: argparse.Namespace, b: Bench, cfg: dict) -> None:
    """Every part of the run, its numbers into ``b.results``."""
    install_trainer(b)
    res = b.results
    res.update(
        data=a.data or "the built-in demo", fold=a.fold, repeats=a.repeats, versions=versions(b)
    )
    d = prepare(b, cfg)
    res["cases"] = int((d["manifest"]["label"] != "").sum())
    res["folds_identical"] = True  # prepare() raised otherwise
    pre = preprocess(b, cfg, d)
    if "preprocess" in a.only:
        res["preprocess"] = pre
    needs_train = a.only & {"throughput", "budgets", "inference"}
    if needs_train:
        weights = None
        if any(cfg["arms"][arm]["init"] == "pretrained" for arm in a.arms):
            res["pretrain"] = pretrain(b, cfg, d)
            weights = res["pretrain"]["checkpoint"]
        res["throughput"] = throughput(b, cfg, d, pre)
        if a.only & {"budgets", "inference"}:
            res["budgets"] = budgets(b, cfg, d, pre, res["throughput"], weights)
        if "inference" in a.only:
            res["inference"] = inference(b, cfg, d, res["budgets"])
    if "dicom" in a.only:
        res["dicom"] = dicom(b)
    if "startup" in a.only:
        res["startup"] = startup.measure(b.work / "startup", a.repeats, a.threads, b.say)


if __name__ == "__main__":
    sys.exit(main())
