"""medtl against nnU-Net v2 at clinical image sizes: preprocessing, inference with and
without TTA, DICOM conversion and peak memory on generated CT-like cases.

Run it with medtl's environment; nnU-Net runs from its own (``make bench-clinical`` builds
it at ``benchmarks/.venv-nnunet``, as ``make bench`` does)::

    .venv/bin/python benchmarks/compare_clinical.py                       # 4 cases, 512² × 120
    .venv/bin/python benchmarks/compare_clinical.py --shape 128,128,40 --cases 3 --repeats 1

``make bench``'s demo volumes (48 × 48 × 24) make a case's inference so short that start-up
and Python overhead decide it; CT scans are ~512 × 512 × 100–300 voxels. What this does,
in order (every command's output goes to ``<work>/logs/``):

1. **Data.** ``--cases`` CT-like cases of ``--shape`` voxels at ``--spacing`` mm with 1–3
   lesions each (``benchmarks/clinical_data.py``), ingested by medtl, split into medtl's
   folds and exported to nnU-Net with the same folds, as ``make bench`` does (not timed).
2. **Preprocessing.** ``medtl plan`` + ``medtl preprocess`` against
   ``nnUNetv2_plan_and_preprocess -c 3d_fullres``, both at ``--target-spacing`` (nnU-Net:
   ``-overwrite_target_spacing``, plans ``--plans``), ``--repeats`` times from scratch:
   wall, CPU, peak memory.
3. **Training, briefly.** One fold model each: medtl ``--train-steps`` steps of the
   config's network, nnU-Net ``--nnunet-epochs`` epochs of ``--nnunet-iters`` iterations
   of its planned network. Not timed as a result: the Dice of the inference rows is that
   of a few minutes of training.
4. **Inference.** ``medtl predict`` against ``nnUNetv2_predict`` from the raw images of the
   fold's held-out cases, masks on the original grid, TTA (8 mirrors) off and on,
   ``--repeats`` times, the tools alternating: seconds per case after start-up (all cases
   − one case), start-up, Dice, peak memory.
5. **DICOM → NIfTI.** ``medtl convert`` against ``dcm2niix`` on ``--cases`` generated
   series of the same in-plane size and slices (``dicom_convert.SeriesSet``).
6. **Report.** The table, written into ``docs/benchmarks.md`` between its
   ``bench-clinical:start`` / ``bench-clinical:end`` markers, only from a full run
   (``--only`` runs print it) on a quiet machine (see ``bench_quiet``);
   ``<work>/results.json`` holds every number.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bench_common import (
    HERE,
    Bench,
    bench_parser,
    finish_args,
    held_out,
    load_config,
    measured_run,
    train_settings,
    versions,
)
from bench_data import dicom, prepare, preprocess
from bench_medtl import inference, medtl_train_cmd
from bench_nnunet import install_trainer, nnunet_train
from bench_table import publish
from clinical_data import ClinicalSpec, triple, write_cases
from clinical_table import END, HEADING, START, clinical_markdown

PARTS = "preprocess,inference,dicom"
ARM = "scratch"
#: nnU-Net's budget mark far beyond any run: its weights are saved once, at the end
NO_BUDGET_S = 1e9


def parse_args(argv=None) -> argparse.Namespace:
    ap = bench_parser(
        __doc__,
        config=HERE / "config_clinical.yaml",
        work=HERE / "work-clinical",
        budgets=f"{NO_BUDGET_S / 60:g}",  # not used: training runs a fixed length
        probe_steps=1,
        only=PARTS,
        repeats=3,
        infer_repeats=3,
    )
    for action in ap._actions:  # the shared options this harness does not use
        if action.dest in ("budgets", "infer_repeats", "probe_steps"):
            action.help = argparse.SUPPRESS
    ap.add_argument("--cases", type=int, default=4, help="generated cases (default 4)")
    ap.add_argument(
        "--shape",
        type=lambda t: triple(t, int),
        default=(512, 512, 120),
        help="voxels x,y,z of each case (default 512,512,120)",
    )
    ap.add_argument(
        "--spacing", type=triple, default=(0.8, 0.8, 2.5), help="mm x,y,z (default 0.8,0.8,2.5)"
    )
    ap.add_argument(
        "--target-spacing",
        type=triple,
        default=(2.5, 2.5, 5.0),
        help="mm x,y,z both tools resample to (default 2.5,2.5,5)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated cases")
    ap.add_argument("--train-steps", type=int, help="medtl's training steps (default: config's)")
    ap.add_argument("--nnunet-epochs", type=int, default=1, help="nnU-Net's epochs (default 1)")
    ap.add_argument(
        "--nnunet-iters",
        type=int,
        default=2,
        help="nnU-Net's iterations an epoch (default 2: its plan at 2.5 x 2.5 x 5 mm is a "
        "patch of 160 x 192 x 64, over a minute an iteration on 2 busy CPU cores, so 2 "
        "take about as long as medtl's 60 steps)",
    )
    ap.add_argument(
        "--plans", default="nnUNetPlans_clinical", help="nnU-Net's plans name at that spacing"
    )
    a = finish_args(ap.parse_args(argv))
    a.arms, a.data, a.modality = [ARM], None, "CT"
    # nnU-Net's arrays are z, y, x
    zyx = [f"{s:g}" for s in reversed(a.target_spacing)]
    a.nnunet_plan_args = ["-overwrite_target_spacing", *zyx, "-overwrite_plans_name", a.plans]
    return a


def generate(b: Bench, spec: ClinicalSpec) -> Path:
    """The cases' sheet, generated unless the same spec is already there."""
    folder = b.work / "data"
    marker = folder / "spec.json"
    wanted = json.dumps(spec.__dict__, sort_keys=True)
    if marker.is_file() and marker.read_text() == wanted and (folder / "cases.tsv").is_file():
        return folder / "cases.tsv"
    b.say(f"generating {spec.cases} cases of {spec.shape} at {spec.spacing} mm")
    shutil.rmtree(b.work, ignore_errors=True)  # a new data set: nothing earlier holds
    b.logs.mkdir(parents=True)
    sheet = write_cases(folder, spec)
    marker.write_text(wanted)
    return sheet


def train(b: Bench, cfg: dict, d: dict) -> dict:
    """One fold model each, a fixed length; placed where :func:`inference` looks."""
    a = b.args
    run = b.work / "medtl" / "train" / ARM
    shutil.rmtree(run, ignore_errors=True)
    steps = a.train_steps or cfg["train"]["steps"]
    every = max(1, steps // 3)
    settings = train_settings(cfg, ARM, steps=steps, val_every=every, checkpoint_every=every)
    b.say(f"medtl training: {steps} steps")
    t = b.run(medtl_train_cmd(b, d, ARM, run, settings, None), "medtl_train")
    snap = b.work / "medtl" / "budget" / ARM / "snapshots" / "mark0"
    snap.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "best.pt", snap / "best.pt")
    b.say(f"nnU-Net training: {a.nnunet_epochs} epochs of {a.nnunet_iters} iterations")
    nn = nnunet_train(b, d, epochs=a.nnunet_epochs, marks=[NO_BUDGET_S], tag="clinical")
    return {
        "medtl": {"steps": steps, "wall_s": t.wall_s},
        "nnunet": {
            "epochs": nn["epochs_run"],
            "iters": a.nnunet_iters,
            "wall_s": nn["timing"]["wall_s"],
        },
    }


def nnunet_inputs(b: Bench, d: dict) -> None:
    """nnU-Net's input folder of the fold's held-out raw images, where :func:`inference`
    looks (``make bench`` makes it when it scores the budget models)."""
    from medtl.export.nnunet import nnunet_case_id

    test_cases, _ = held_out(b, d)
    folder = b.work / "nnunet" / "test_input"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for c in test_cases:
        shutil.copy(d["raw"] / "imagesTr" / f"{nnunet_case_id(c)}_0000.nii.gz", folder)


def spacings(b: Bench, d: dict, pre: dict) -> dict:
    """The grid each tool ran at: medtl's plan and nnU-Net's 3d_fullres plans, x, y, z."""
    plans = b.nn_pre / d["raw"].name / f"{b.plans}.json"
    full = json.loads(plans.read_text())["configurations"]["3d_fullres"]
    return {
        "medtl": list(pre["medtl_plan"]["target_spacing"]),
        "nnunet": list(reversed(full["spacing"])),
        "nnunet_patch_xyz": list(reversed(pre["nnunet_patch_zyx"])),
        "nnunet_batch": pre["nnunet_batch"],
    }


def medtl_windows(b: Bench, cfg: dict, d: dict) -> list[dict]:
    """The window medtl's ``--window`` gives each held-out case on its preprocessed grid,
    and how many of them cover it (as :mod:`medtl.predict.window` decides)."""
    import numpy as np

    from medtl.config import ModelConfig, PredictConfig, parse_section, window_setting
    from medtl.models.networks import window_multiple
    from medtl.predict.inference import window_count
    from medtl.predict.window import prediction_window

    multiple = window_multiple(parse_section(ModelConfig, cfg["model"], "model"))
    overlap = parse_section(PredictConfig, cfg.get("predict", {}), "predict").overlap
    window, patch = window_setting(b.args.medtl_window), cfg["train"]["patch_size"]
    out = []
    for case in held_out(b, d)[0]:
        with np.load(b.work / "medtl" / "cases" / f"{case}.npz") as z:
            shape = list(z["image"].shape[1:])
        sides = prediction_window(shape, patch, window, multiple, overlap)
        out.append({"shape": shape, "window": sides, "count": window_count(shape, sides, overlap)})
    return out


def measure(b: Bench, cfg: dict, res: dict) -> None:
    """Every part of the run, its numbers into ``res``."""
    a = b.args
    if a.only & {"preprocess", "inference"}:
        spec = ClinicalSpec(a.cases, a.shape, a.spacing, a.seed)
        a.data = str(generate(b, spec))
        cfg["preprocess"] = {**cfg["preprocess"], "target_spacing": list(a.target_spacing)}
        d = prepare(b, cfg)
        repeats = a.repeats
        if "preprocess" not in a.only:
            a.repeats = 1  # inference needs it done once
        pre = preprocess(b, cfg, d)
        a.repeats = repeats
        res["spacing"] = spacings(b, d, pre)
        if "preprocess" in a.only:
            res["preprocess"] = {k: pre[k] for k in ("medtl", "nnunet")}
    if "inference" in a.only:
        res["training"] = train(b, cfg, d)
        nnunet_inputs(b, d)
        bud = {ARM: {"dice": [float("nan")]}}
        res["inference"] = inference(b, cfg, d, bud, ttas=(False, True), onnx=False)
        res["inference"]["windows"] = medtl_windows(b, cfg, d)
    if "dicom" in a.only:
        import dicom_convert

        series = dicom_convert.SeriesSet(
            n_series=a.cases, size=a.shape[0], slices=a.shape[2], seed=a.seed
        )
        res["dicom"] = dicom(b, series)


def main(argv=None) -> int:
    a = parse_args(argv)
    markers = {"start": START, "end": END, "heading": HEADING}
    if a.from_json:
        res = json.loads(Path(a.from_json).read_text())
    else:
        b = Bench(a)
        if not (b.nnunet_bin / "nnUNetv2_train").is_file():
            sys.exit(f"nnU-Net not found in {a.nnunet_venv}. How to fix: `make bench-clinical`")
        cfg = load_config(Path(a.config))
        a.infer_repeats = a.repeats  # every timed row from --repeats runs
        start = time.perf_counter()
        install_trainer(b)
        res = b.results
        res.update(
            data=f"{a.cases} generated CT-like cases (benchmarks/clinical_data.py, seed {a.seed})",
            shape=list(a.shape),
            native_spacing=list(a.spacing),
            fold=a.fold,
            repeats=a.repeats,
            model=cfg["model"],
            patch=cfg["train"]["patch_size"],
            versions=versions(b),
        )
        measured_run(b, start, lambda: measure(b, cfg, res))
    return publish(res, clinical_markdown, a, **markers)


if __name__ == "__main__":
    sys.exit(main())
