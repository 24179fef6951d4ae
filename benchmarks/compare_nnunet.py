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
   times: seconds per case and Dice.
6. **DICOM → NIfTI.** ``medtl convert`` against ``dcm2niix`` on a generated series set
   (``benchmarks/dicom_convert.py``).
7. **Report.** One table of ratios (medtl / nnU-Net or dcm2niix; medians over repeats)
   with the targets, printed and written into ``docs/benchmarks.md`` between its
   ``bench:start`` / ``bench:end`` markers, with machine, versions and date;
   ``<work>/results.json`` holds every number.

No test enforces these figures: they depend on the machine. Ratios are measured in one
run, on the same data, folds and cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from measure import Timing, median_timing, run_timed  # noqa: E402

DATASET_ID = 500
DATASET_NAME = "medtlbench"
TRAINER = "nnUNetTrainer_medtlBudget"
NNUNET_ITERS = 10  # training iterations per nnU-Net epoch (its snapshot granularity)
START = "<!-- bench:start -->"
END = "<!-- bench:end -->"

# Targets of the benchmark (issue #7): ratio medtl / peer, and which way is better.
TARGETS = {
    "preprocess": ("preprocessing wall time", 1 / 3, "≤ 0.33 (≥ 3× faster)"),
    "inference": ("inference s/case (TTA off and on)", 1 / 2, "≤ 0.5 (≥ 2× faster)"),
    "dicom": ("DICOM → NIfTI wall time", 1.5, "≤ 1.5"),
}


# ----------------------------------------------------------------------------- helpers


class Bench:
    """Paths, tools and the log of one benchmark run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work).resolve()
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.medtl = [sys.executable, "-m", "medtl"]
        self.nnunet_bin = Path(args.nnunet_venv).resolve() / "bin"
        self.threads = args.threads
        self.results: dict = {"started": dt.datetime.now().isoformat(timespec="seconds")}
        self.nn_raw = self.work / "nnunet" / "raw"
        self.nn_pre = self.work / "nnunet" / "preprocessed"
        self.nn_res = self.work / "nnunet" / "results"

    def say(self, text: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", flush=True)

    def nnunet_env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.nn_raw),
            nnUNet_preprocessed=str(self.nn_pre),
            nnUNet_results=str(self.nn_res),
            # nnU-Net guesses its augmentation workers from the host name (12 elsewhere);
            # give it the cores medtl gets.
            nnUNet_n_proc_DA=str(self.threads),
            PATH=f"{self.nnunet_bin}{os.pathsep}{env.get('PATH', '')}",
        )
        env.update(extra)
        return env

    def nn(self, tool: str) -> str:
        return str(self.nnunet_bin / tool)

    def run(self, cmd: list, log: str, **kw) -> Timing:
        return run_timed(cmd, log=self.logs / f"{log}.log", **kw)


def load_config(path: Path) -> dict:
    """The workflow config with the schema's defaults filled in (as the workflow sees it)."""
    from snakemake.utils import validate

    cfg = yaml.safe_load(Path(path).read_text())
    validate(cfg, str(ROOT / "pipeline" / "schemas" / "config.schema.yaml"))
    return cfg


def compact(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def dice_per_case(pred: Path, ref: Path, classes: list[int]) -> float:
    """Mean Dice over ``classes`` of two label files on one grid (empty and empty: 1)."""
    p = np.asanyarray(nib.load(str(pred)).dataobj).astype(np.int64)
    r = np.asanyarray(nib.load(str(ref)).dataobj).astype(np.int64)
    if p.shape != r.shape:
        raise ValueError(f"{pred}: shape {p.shape} differs from the reference {r.shape}")
    scores = []
    for c in classes:
        a, b = p == c, r == c
        denom = a.sum() + b.sum()
        scores.append(1.0 if denom == 0 else 2.0 * np.logical_and(a, b).sum() / denom)
    return float(np.mean(scores))


def mean_dice(pred_dir: Path, refs: dict[str, Path], classes: list[int], names=None) -> float:
    """Mean case Dice of ``pred_dir/<name>.nii.gz`` against ``refs`` (case -> label)."""
    names = names or {c: c for c in refs}
    return float(
        np.mean([dice_per_case(pred_dir / f"{names[c]}.nii.gz", refs[c], classes) for c in refs])
    )


def steady_step_seconds(curves: Path) -> tuple[float, float]:
    """(median seconds per training step, seconds before the first step) from curves.csv.

    The median of consecutive differences skips the steps that also validated.
    """
    df = pd.read_csv(curves)
    elapsed = df["elapsed_s"].to_numpy(dtype=float)
    diffs = np.diff(elapsed)
    return float(np.median(diffs[2:] if len(diffs) > 4 else diffs)), float(elapsed[0])


# ----------------------------------------------------------------------------- stages


def prepare(b: Bench, cfg: dict) -> dict:
    """Ingest, split and export to nnU-Net (with the same folds). Not timed."""
    from medtl.export.nnunet import check_same_folds

    a, med = b.args, b.work / "medtl"
    data = b.work / "data"
    if a.data:
        target, source = Path(a.data).resolve(), None
        own_source = str(cfg["pretrain"]["source"] or "")
        if (
            not cfg["pretrain"]["checkpoint"]
            and own_source
            and not own_source.startswith("data/demo")
        ):
            source = (ROOT / own_source).resolve()
    else:
        demo = cfg["dataset"]["demo"]
        if not (data / "target" / "cases.tsv").is_file():
            b.say("generating the demo data")
            b.run(
                [
                    *b.medtl,
                    "demo-data",
                    "--out",
                    data,
                    "--seed",
                    demo["seed"],
                    "--n-source",
                    demo["n_source"],
                    "--n-patients",
                    demo["n_patients"],
                    "--quiet",
                ],
                "demo_data",
            )
        target, source = data / "target" / "cases.tsv", data / "source"
    modality = a.modality or cfg["dataset"]["modality"]
    if not (med / "ingest" / "manifest.tsv").is_file():
        b.say(f"ingesting {target.name}")
        b.run(
            [
                *b.medtl,
                "ingest",
                target,
                "--out",
                med / "ingest",
                "--salt",
                cfg["salt"],
                "--modality",
                modality,
                "--classes",
                compact(cfg["classes"]),
                "--synonyms",
                compact(cfg["dataset"]["label_synonyms"]),
                "--quiet",
            ],
            "ingest",
        )
    if source is not None and not (med / "source" / "manifest.tsv").is_file():
        b.run(
            [
                *b.medtl,
                "ingest",
                source,
                "--out",
                med / "source",
                "--salt",
                cfg["salt"],
                "--modality",
                modality,
                "--quiet",
            ],
            "ingest_source",
        )
    folds = med / "folds.json"
    s = cfg["splits"]
    b.run(
        [
            *b.medtl,
            "split",
            "--manifest",
            med / "ingest" / "manifest.tsv",
            "--out",
            folds,
            "--folds",
            s["folds"],
            "--seed",
            s["seed"],
            "--val-fraction",
            s["val_fraction"],
        ],
        "split",
    )
    b.say("exporting to nnU-Net's raw format with medtl's folds")
    b.run(
        [
            *b.medtl,
            "export-nnunet",
            "--manifest",
            med / "ingest" / "manifest.tsv",
            "--out",
            b.nn_raw,
            "--dataset-id",
            DATASET_ID,
            "--name",
            DATASET_NAME,
            "--classes",
            compact(cfg["classes"]),
            "--folds",
            folds,
            "--overwrite",
        ],
        "export_nnunet",
    )
    raw = b.nn_raw / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    folds_data = json.loads(folds.read_text())
    check_same_folds(folds_data, json.loads((raw / "splits_final.json").read_text()))
    manifest = pd.read_csv(
        med / "ingest" / "manifest.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    return {
        "raw": raw,
        "folds": folds,
        "folds_data": folds_data,
        "manifest": manifest,
        "source_manifest": med / "source" / "manifest.tsv" if source is not None else None,
        "modality": modality,
    }


def preprocess(b: Bench, cfg: dict, d: dict) -> dict:
    """medtl plan + preprocess against nnUNetv2_plan_and_preprocess, from scratch each time."""
    med = b.work / "medtl"
    medtl_t, nn_t = [], []
    for r in range(b.args.repeats):
        b.say(f"preprocessing, repeat {r + 1}/{b.args.repeats}: medtl")
        shutil.rmtree(med / "cases", ignore_errors=True)
        plan_t = b.run(
            [
                *b.medtl,
                "plan",
                "--manifest",
                med / "ingest" / "manifest.tsv",
                "--out",
                med / "plan.json",
                "--settings",
                compact(cfg["preprocess"]),
                "--classes",
                compact(cfg["classes"]),
            ],
            "medtl_plan",
        )
        pre_t = b.run(
            [
                *b.medtl,
                "preprocess",
                "--manifest",
                med / "ingest" / "manifest.tsv",
                "--plan",
                med / "plan.json",
                "--out-dir",
                med / "cases",
                "--workers",
                b.threads,
                "--quiet",
            ],
            "medtl_preprocess",
        )
        medtl_t.append(
            Timing(
                plan_t.wall_s + pre_t.wall_s,
                plan_t.cpu_s + pre_t.cpu_s,
                max(plan_t.peak_rss_mb, pre_t.peak_rss_mb),
                0,
            )
        )
        b.say(f"preprocessing, repeat {r + 1}/{b.args.repeats}: nnU-Net")
        shutil.rmtree(b.nn_pre, ignore_errors=True)
        nn_t.append(
            b.run(
                [
                    b.nn("nnUNetv2_plan_and_preprocess"),
                    "-d",
                    DATASET_ID,
                    "-c",
                    "3d_fullres",
                    "-np",
                    b.threads,
                ],
                "nnunet_plan_and_preprocess",
                env=b.nnunet_env(),
            )
        )
    pre = b.nn_pre / d["raw"].name
    shutil.copy(d["raw"] / "splits_final.json", pre / "splits_final.json")
    from medtl.export.nnunet import check_same_folds

    check_same_folds(d["folds_data"], json.loads((pre / "splits_final.json").read_text()))
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    fullres = plans["configurations"]["3d_fullres"]
    return {
        "medtl": median_timing(medtl_t),
        "nnunet": median_timing(nn_t),
        "nnunet_patch_zyx": list(map(int, fullres["patch_size"])),
        "nnunet_batch": int(fullres["batch_size"]),
        "nnunet_features": list(fullres["architecture"]["arch_kwargs"]["features_per_stage"]),
        "medtl_plan": json.loads((med / "plan.json").read_text()),
    }


def held_out(b: Bench, d: dict) -> tuple[list[str], dict[str, Path]]:
    """The held-out cases of ``--fold`` and their reference labels (case -> file)."""
    cases = next(f["test"] for f in d["folds_data"]["folds"] if f["fold"] == b.args.fold)
    return cases, {c: b.work / "medtl" / "ingest" / "labels" / f"{c}.nii.gz" for c in cases}


def train_settings(cfg: dict, arm: str, **train_overrides) -> dict:
    train = {**cfg["train"], **train_overrides}
    return {
        "model": cfg["model"],
        "train": train,
        "arm": cfg["arms"][arm],
        "predict": cfg["predict"],
        "seed": cfg["seed"],
        "device": b_device(cfg),
        "classes": cfg["classes"],
        "min_loaded_fraction": cfg["pretrain"]["min_loaded_fraction"],
        "weights_format": cfg["pretrain"]["format"] if cfg["pretrain"]["checkpoint"] else "medtl",
    }


def b_device(cfg: dict) -> str:
    return os.environ.get("MEDTL_BENCH_DEVICE", "cpu")


def pretrain(b: Bench, cfg: dict, d: dict) -> dict:
    """medtl's supervised pretraining (a one-off cost, shown apart), or the config's weights."""
    if cfg["pretrain"]["checkpoint"]:
        return {"checkpoint": str((ROOT / cfg["pretrain"]["checkpoint"]).resolve()), "timing": None}
    out = b.work / "medtl" / "pretrain"
    ckpt = out / "checkpoint.pt"
    b.say("medtl pretraining (one-off, not part of the training budgets)")
    shutil.rmtree(out, ignore_errors=True)
    settings = {
        "model": cfg["model"],
        "pretrain": cfg["pretrain"],
        "seed": cfg["seed"],
        "device": b_device(cfg),
    }
    t = b.run(
        [
            *b.medtl,
            "pretrain",
            "--manifest",
            d["source_manifest"],
            "--plan",
            b.work / "medtl" / "plan.json",
            "--out",
            out,
            "--settings",
            compact(settings),
            "--threads",
            b.threads,
            "--quiet",
        ],
        "medtl_pretrain",
    )
    return {"checkpoint": str(ckpt), "timing": t.as_dict()}


def medtl_train_cmd(b: Bench, d: dict, arm: str, out: Path, settings: dict, weights) -> list:
    cmd = [
        *b.medtl,
        "train",
        "--arm",
        arm,
        "--fold",
        b.args.fold,
        "--folds",
        d["folds"],
        "--cases",
        b.work / "medtl" / "cases",
        "--out",
        out,
        "--settings",
        compact(settings),
        "--threads",
        b.threads,
        "--quiet",
    ]
    if weights and settings["arm"]["init"] == "pretrained":
        cmd += ["--pretrained", weights]
    return cmd


def throughput(b: Bench, cfg: dict, d: dict, pre: dict) -> dict:
    """Training iterations/s: nnU-Net, medtl at nnU-Net's patch and batch, medtl's own."""
    steps = b.args.probe_steps
    patch_xyz = list(reversed(pre["nnunet_patch_zyx"]))  # nnU-Net's arrays are z, y, x
    probes = {
        "medtl_same_patch": (
            {
                **cfg,
                "model": {
                    **cfg["model"],
                    "name": "plainconvunet",
                    "features": pre["nnunet_features"],
                },
            },
            {"patch_size": patch_xyz, "batch_size": pre["nnunet_batch"]},
        ),
        "medtl_default": (cfg, {}),
    }
    out = {}
    for name, (c, over) in probes.items():
        b.say(f"throughput probe: {name}")
        run = b.work / "medtl" / "probe" / name
        shutil.rmtree(run, ignore_errors=True)
        settings = train_settings(
            c, "scratch", steps=steps, val_every=steps, checkpoint_every=steps, **over
        )
        t = b.run(medtl_train_cmd(b, d, "scratch", run, settings, None), f"probe_{name}")
        sec, startup = steady_step_seconds(run / "curves.csv")
        batch = settings["train"]["batch_size"]
        out[name] = {
            "s_per_step": sec,
            "it_per_s": 1 / sec,
            "samples_per_s": batch / sec,
            "startup_s": startup,
            "wall_s": t.wall_s,
            "patch": settings["train"]["patch_size"],
            "batch": batch,
        }
    b.say("throughput probe: nnU-Net")
    nn = nnunet_train(b, d, epochs=3, marks=[], tag="probe")
    out["nnunet"] = {
        "s_per_step": nn["s_per_iter"],
        "it_per_s": 1 / nn["s_per_iter"],
        "samples_per_s": pre["nnunet_batch"] / nn["s_per_iter"],
        "startup_s": nn["startup_s"],
        "wall_s": nn["timing"]["wall_s"],
        "patch": patch_xyz,
        "batch": pre["nnunet_batch"],
    }
    return out


def nnunet_train(b: Bench, d: dict, epochs: int, marks: list[float], tag: str) -> dict:
    """Train nnU-Net fold ``--fold`` with the budget trainer; parse its log."""
    folder = (
        b.nn_res / d["raw"].name / f"{TRAINER}__nnUNetPlans__3d_fullres" / f"fold_{b.args.fold}"
    )
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.time()
    env = b.nnunet_env(
        MEDTL_BENCH_T0=repr(t0),
        MEDTL_BENCH_MARKS=",".join(f"{m:.1f}" for m in marks),
        MEDTL_BENCH_EPOCHS=str(epochs),
        MEDTL_BENCH_ITERS=str(NNUNET_ITERS),
    )
    t = b.run(
        [
            b.nn("nnUNetv2_train"),
            DATASET_ID,
            "3d_fullres",
            b.args.fold,
            "-tr",
            TRAINER,
            "-device",
            b.args.nnunet_device,
        ],
        f"nnunet_train_{tag}",
        env=env,
    )
    logs = sorted(folder.glob("training_log_*.txt"))
    text = logs[-1].read_text() if logs else ""
    train_s = [float(x) for x in re.findall(r"bench: train_s ([0-9.]+)", text)]
    first = re.search(r"bench: first epoch at ([0-9.]+)", text)
    steady = train_s[1:] or train_s
    return {
        "timing": t.as_dict(),
        "folder": folder,
        "s_per_iter": statistics.median(steady) / NNUNET_ITERS if steady else float("nan"),
        "startup_s": float(first.group(1)) if first else float("nan"),
        "epochs_run": len(train_s),
        "marks_at_s": [float(x) for x in re.findall(r"budget mark \d+: ([0-9.]+) s", text)],
    }


def budgets(b: Bench, cfg: dict, d: dict, pre: dict, thr: dict, weights) -> dict:
    """Train each tool once to the largest budget, keep its model at every budget."""
    marks = [m * 60.0 for m in b.args.budgets]
    total = marks[-1]
    classes = [int(k) for k in cfg["classes"]]
    test_cases, refs = held_out(b, d)
    out: dict = {"budgets_min": b.args.budgets, "test_cases": len(test_cases)}

    # nnU-Net: epochs sized so its poly schedule ends at the largest budget.
    nn_epoch_s = NNUNET_ITERS * thr["nnunet"]["s_per_step"] * 1.25  # + its validation
    epochs = max(1, int((total - thr["nnunet"]["startup_s"]) / nn_epoch_s))
    b.say(f"nnU-Net to {total / 60:.1f} min: {epochs} epochs of {NNUNET_ITERS} iterations")
    nn = nnunet_train(b, d, epochs=epochs, marks=marks, tag="budget")
    test_in = b.work / "nnunet" / "test_input"
    shutil.rmtree(test_in, ignore_errors=True)
    test_in.mkdir(parents=True)
    from medtl.export.nnunet import nnunet_case_id

    for c in test_cases:
        shutil.copy(d["raw"] / "imagesTr" / f"{nnunet_case_id(c)}_0000.nii.gz", test_in)
    nn_scores = []
    for i, _ in enumerate(marks):
        pred = b.work / "nnunet" / "budget_pred" / f"mark{i}"
        shutil.rmtree(pred, ignore_errors=True)
        ckpt = nn["folder"] / f"checkpoint_mark{i}.pth"
        if not ckpt.is_file():
            nn_scores.append(float("nan"))
            continue
        nnunet_predict(
            b, test_in, pred, f"checkpoint_mark{i}.pth", tta=False, log=f"nnunet_budget_pred{i}"
        )
        names = {c: nnunet_case_id(c) for c in test_cases}
        nn_scores.append(mean_dice(pred, refs, classes, names))
    out["nnunet"] = {
        "dice": nn_scores,
        "epochs_planned": epochs,
        "epochs_run": nn["epochs_run"],
        "marks_at_s": nn["marks_at_s"],
        "wall_s": nn["timing"]["wall_s"],
    }
    out["nnunet_folder"] = str(nn["folder"])

    # medtl arms: steps sized from the probe so the cosine schedule ends near the budget.
    s_step = thr["medtl_default"]["s_per_step"]
    startup = thr["medtl_default"]["startup_s"]
    steps = max(10, int((total - startup) * 0.85 / s_step))
    val_every = max(1, steps // 12)
    for arm in b.args.arms:
        b.say(f"medtl {arm} to {total / 60:.1f} min: {steps} steps")
        run = b.work / "medtl" / "budget" / arm
        shutil.rmtree(run, ignore_errors=True)
        settings = train_settings(
            cfg, arm, steps=steps, val_every=val_every, checkpoint_every=val_every
        )
        snaps = [run / "snapshots" / f"mark{i}" for i in range(len(marks))]
        taken: list[float] = []

        def poll(elapsed: float, run=run, snaps=snaps, taken=taken) -> bool:
            while len(taken) < len(marks) and elapsed >= marks[len(taken)]:
                snap = snaps[len(taken)]
                snap.mkdir(parents=True, exist_ok=True)
                if (run / "best.pt").is_file():
                    shutil.copy(run / "best.pt", snap / "best.pt")
                taken.append(elapsed)
            return len(taken) == len(marks)  # past the last budget: stop

        t = b.run(
            medtl_train_cmd(b, d, arm, run, settings, weights), f"medtl_budget_{arm}", on_poll=poll
        )
        for i in range(len(taken), len(marks)):  # finished before these budgets
            snaps[i].mkdir(parents=True, exist_ok=True)
            shutil.copy(run / "best.pt", snaps[i] / "best.pt")
            taken.append(t.wall_s)
        scores = []
        for i, snap in enumerate(snaps):
            if not (snap / "best.pt").is_file():
                scores.append(float("nan"))
                continue
            pred = snap / "pred"
            b.run(
                [
                    *b.medtl,
                    "predict-fold",
                    "--run",
                    snap,
                    "--folds",
                    d["folds"],
                    "--fold",
                    b.args.fold,
                    "--cases",
                    b.work / "medtl" / "cases",
                    "--out",
                    pred,
                    "--settings",
                    compact({**cfg["predict"], "tta": False}),
                    "--device",
                    b_device(cfg),
                    "--threads",
                    b.threads,
                    "--quiet",
                ],
                f"medtl_budget_pred_{arm}{i}",
            )
            scores.append(mean_dice(pred, refs, classes))
        done = pd.read_csv(run / "curves.csv")
        out[arm] = {
            "dice": scores,
            "steps_planned": steps,
            "steps_run": int(done["step"].max()),
            "marks_at_s": taken,
            "wall_s": t.wall_s,
        }
    return out


def nnunet_predict(b: Bench, src: Path, dst: Path, chk: str, tta: bool, log: str) -> Timing:
    cmd = [
        b.nn("nnUNetv2_predict"),
        "-i",
        src,
        "-o",
        dst,
        "-d",
        DATASET_ID,
        "-c",
        "3d_fullres",
        "-f",
        b.args.fold,
        "-tr",
        TRAINER,
        "-chk",
        chk,
        "-device",
        b.args.nnunet_device,
        "-npp",
        1,
        "-nps",
        1,
    ]
    if not tta:
        cmd.append("--disable_tta")
    return b.run(cmd, log, env=b.nnunet_env())


def inference(b: Bench, cfg: dict, d: dict, bud: dict) -> dict:
    """Per-case inference time and Dice from raw images, TTA off and on, one fold model."""
    from medtl.export.nnunet import nnunet_case_id

    classes = [int(k) for k in cfg["classes"]]
    test_cases, refs = held_out(b, d)
    n = len(test_cases)
    best_arm = max(b.args.arms, key=lambda a: np.nan_to_num(bud[a]["dice"][-1], nan=-1))
    # medtl predict reads a finished run's folder: the plan and the fold model.
    model = b.work / "medtl" / "model"
    shutil.rmtree(model, ignore_errors=True)
    (model / "preprocess").mkdir(parents=True)
    shutil.copy(b.work / "medtl" / "plan.json", model / "preprocess" / "plan.json")
    fold_dir = model / "train" / best_arm / f"fold{b.args.fold}"
    fold_dir.mkdir(parents=True)
    shutil.copy(
        b.work
        / "medtl"
        / "budget"
        / best_arm
        / "snapshots"
        / f"mark{len(b.args.budgets) - 1}"
        / "best.pt",
        fold_dir / "best.pt",
    )
    rows = d["manifest"].set_index("case_id").loc[test_cases]
    sheet = pd.DataFrame(
        {
            "image": [str(Path(p).resolve()) for p in rows["image"]],
            "label": "",
            "patient": rows["patient_id"],
            "case_id": test_cases,
        }
    )
    sheets = {n: b.work / "medtl" / "test_cases.tsv", 1: b.work / "medtl" / "test_case1.tsv"}
    sheet.to_csv(sheets[n], sep="\t", index=False)
    sheet.iloc[:1].to_csv(sheets[1], sep="\t", index=False)
    inputs = {n: b.work / "nnunet" / "test_input", 1: b.work / "nnunet" / "test_input1"}
    shutil.rmtree(inputs[1], ignore_errors=True)
    inputs[1].mkdir(parents=True)
    first = f"{nnunet_case_id(test_cases[0])}_0000.nii.gz"
    shutil.copy(inputs[n] / first, inputs[1] / first)
    last = f"checkpoint_mark{len(b.args.budgets) - 1}.pth"
    names = {c: nnunet_case_id(c) for c in test_cases}
    out: dict = {"cases": n, "medtl_arm": best_arm}
    for tta in (False, True):
        key = "tta" if tta else "no_tta"
        walls: dict = {(tool, k): [] for tool in ("medtl", "nnunet") for k in (1, n)}
        for r in range(b.args.infer_repeats):
            b.say(f"inference {key}, repeat {r + 1}/{b.args.infer_repeats}")
            for k in (n, 1):  # all held-out cases, then one: the difference is per case
                pred_m = b.work / "medtl" / "infer" / f"{key}_{k}"
                shutil.rmtree(pred_m, ignore_errors=True)
                cmd = [*b.medtl, "predict", sheets[k], "--model", model, "--arm", best_arm]
                cmd += ["--out", pred_m, "--device", b_device(cfg), "--threads", b.threads]
                cmd += ["--quiet", "--tta" if tta else "--no-tta"]
                walls["medtl", k].append(b.run(cmd, f"medtl_predict_{key}_{k}"))
                pred_n = b.work / "nnunet" / "infer" / f"{key}_{k}"
                shutil.rmtree(pred_n, ignore_errors=True)
                walls["nnunet", k].append(
                    nnunet_predict(b, inputs[k], pred_n, last, tta, f"nnunet_predict_{key}_{k}")
                )
        out[key] = {}
        for tool, pred, tool_names in (
            ("medtl", b.work / "medtl" / "infer" / f"{key}_{n}", None),
            ("nnunet", b.work / "nnunet" / "infer" / f"{key}_{n}", names),
        ):
            all_cases = median_timing(walls[tool, n])
            one = median_timing(walls[tool, 1])
            per_case = (all_cases["wall_s"] - one["wall_s"]) / max(1, n - 1)
            out[key][tool] = {
                **all_cases,
                "s_per_case_with_startup": all_cases["wall_s"] / n,
                # the cost of one more case once the tool has started: what a large data
                # set pays per case
                "s_per_case": per_case,
                "startup_s": one["wall_s"] - per_case,
                "one_case_wall_s": one["wall_s"],
                "dice": mean_dice(pred, refs, classes, tool_names),
            }
    return out


def dicom(b: Bench) -> dict:
    import dicom_convert

    dcm2niix = shutil.which("dcm2niix", path=str(Path(sys.executable).parent)) or shutil.which(
        "dcm2niix"
    )
    if not dcm2niix:
        raise RuntimeError(
            "dcm2niix not found. How to fix: `pip install dcm2niix` into medtl's venv "
            "(a dev dependency)"
        )
    b.say("DICOM → NIfTI against dcm2niix")
    return dicom_convert.run(
        b.work / "dicom",
        repeats=b.args.repeats,
        workers=b.threads,
        medtl_cmd=b.medtl,
        dcm2niix=dcm2niix,
    )


# ----------------------------------------------------------------------------- report


def install_trainer(b: Bench) -> None:
    """Put the budget trainer where nnU-Net looks for trainers (its package, by class name)."""
    py = b.nnunet_bin / "python"
    where = subprocess.run(
        [py, "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dst = Path(where) / "training" / "nnUNetTrainer" / "variants" / "medtl_bench"
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "__init__.py").touch()
    shutil.copy(HERE / "nnunet_budget_trainer.py", dst / "nnunet_budget_trainer.py")


def versions(b: Bench) -> dict:
    import monai
    import torch

    def nn_version(code: str) -> str:
        return subprocess.run(
            [b.nnunet_bin / "python", "-c", code], capture_output=True, text=True
        ).stdout.strip()

    cpu = ""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        m = re.search(r"model name\s*:\s*(.+)", info.read_text())
        cpu = m.group(1).strip() if m else ""
    commit = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    import psutil

    return {
        "date": dt.date.today().isoformat(),
        "machine": f"{cpu or platform.processor()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.system()} {platform.release()}",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "medtl": commit,
        "torch (medtl)": torch.__version__,
        "monai": monai.__version__,
        "nnunetv2": nn_version("import importlib.metadata as m; print(m.version('nnunetv2'))"),
        "torch (nnU-Net)": nn_version("import torch; print(torch.__version__)"),
        "threads": b.threads,
    }


#: Per-case inference costs below this are within the run-to-run noise of the
#: difference between an all-case and a one-case run (start-up varies by ~0.3 s).
NOISE_S = 0.05


def fmt(x: float, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def ratio_rows(res: dict) -> list[dict]:
    """One row per measure: medtl, the peer, medtl/peer, which way is better, the target."""
    rows = []

    def add(measure, medtl, peer, better, target="", met=None, peer_name="nnU-Net"):
        ratio = medtl / peer if peer else float("nan")
        rows.append(
            {
                "measure": measure,
                "medtl": medtl,
                "peer": peer,
                "peer_name": peer_name,
                "ratio": ratio,
                "better": better,
                "target": target,
                "met": met,
            }
        )

    if "preprocess" in res:
        p = res["preprocess"]
        r = p["medtl"]["wall_s"] / p["nnunet"]["wall_s"]
        add(
            "preprocessing wall (s)",
            p["medtl"]["wall_s"],
            p["nnunet"]["wall_s"],
            "lower",
            TARGETS["preprocess"][2],
            r <= TARGETS["preprocess"][1],
        )
        add("preprocessing CPU (s)", p["medtl"]["cpu_s"], p["nnunet"]["cpu_s"], "lower")
        add(
            "preprocessing peak memory (MiB)",
            p["medtl"]["peak_rss_mb"],
            p["nnunet"]["peak_rss_mb"],
            "lower",
        )
    if "throughput" in res:
        t = res["throughput"]
        add(
            f"training iterations/s (patch {t['nnunet']['patch']}, batch {t['nnunet']['batch']})",
            t["medtl_same_patch"]["it_per_s"],
            t["nnunet"]["it_per_s"],
            "higher",
        )
        add(
            "training samples/s (same patch and batch)",
            t["medtl_same_patch"]["samples_per_s"],
            t["nnunet"]["samples_per_s"],
            "higher",
        )
    if "budgets" in res:
        bud = res["budgets"]
        arms = [a for a in bud if isinstance(bud[a], dict) and "dice" in bud[a] and a != "nnunet"]
        best = max(arms, key=lambda a: np.nan_to_num(bud[a]["dice"][-1], nan=-1))
        for i, m in enumerate(bud["budgets_min"]):
            last = i == len(bud["budgets_min"]) - 1
            for arm in arms:
                target = "≥ 1 (best arm, largest budget)" if last and arm == best else ""
                met = bud[arm]["dice"][i] >= bud["nnunet"]["dice"][i] if target else None
                add(
                    f"Dice after {m:g} min of training: medtl {arm}",
                    bud[arm]["dice"][i],
                    bud["nnunet"]["dice"][i],
                    "higher",
                    target,
                    met,
                )
    if "inference" in res:
        inf = res["inference"]
        for key, label in (("no_tta", "TTA off"), ("tta", "TTA on (8 mirrors)")):
            m, n = inf[key]["medtl"], inf[key]["nnunet"]
            r = m["s_per_case"] / n["s_per_case"]
            ok = r <= TARGETS["inference"][1] and m["dice"] >= n["dice"]
            add(
                f"inference s/case after start-up, {label}",
                m["s_per_case"],
                n["s_per_case"],
                "lower",
                TARGETS["inference"][2] + ", Dice ≥",
                ok,
            )
            add(
                f"inference s/case with start-up ({inf['cases']} cases), {label}",
                m["s_per_case_with_startup"],
                n["s_per_case_with_startup"],
                "lower",
            )
            add(f"inference start-up (s), {label}", m["startup_s"], n["startup_s"], "lower")
            add(f"inference Dice, {label}", m["dice"], n["dice"], "higher")
    if "dicom" in res:
        dcm = res["dicom"]
        med, peer = dcm["medtl"]["median"]["wall_s"], dcm["dcm2niix"]["median"]["wall_s"]
        add(
            f"DICOM → NIfTI wall (s), {dcm['n_series']} series / {dcm['n_files']} files",
            med,
            peer,
            "lower",
            TARGETS["dicom"][2],
            med / peer <= TARGETS["dicom"][1],
            peer_name="dcm2niix",
        )
    return rows


def markdown(res: dict) -> str:
    v = res["versions"]
    lines = [
        f"Measured on {v['date']} — {v['machine']}; GPU: {v['gpu']}; {v['threads']} threads for "
        f"each tool. medtl {v['medtl']} (torch {v['torch (medtl)']}, MONAI {v['monai']}), "
        f"nnU-Net {v['nnunetv2']} (torch {v['torch (nnU-Net)']}), Python {v['python']}.",
        f"Data: {res['data']}; fold {res['fold']}; medians over {res['repeats']} repeats; "
        f"the whole run took {res['total_min']:.1f} min.",
        "",
        "| measure | medtl | peer | medtl / peer | better | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in ratio_rows(res):
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        digits = 3 if "Dice" in r["measure"] else 2
        if "after start-up" in r["measure"] and r["medtl"] < NOISE_S:
            # the one-case run and the all-case run differ by less than run-to-run noise
            r = {**r, "medtl": None, "ratio": None}
            r["measure"] += f" (medtl: below {NOISE_S} s, the noise of the estimate)"
        lines.append(
            f"| {r['measure']} | {fmt(r['medtl'], digits)} | "
            f"{r['peer_name']} {fmt(r['peer'], digits)} "
            f"| {fmt(r['ratio'])} | {r['better']} | {r['target']} | {met} |"
        )
    extra = []
    if "throughput" in res:
        t = res["throughput"]["medtl_default"]
        extra.append(
            f"medtl's own configuration (patch {t['patch']}, batch {t['batch']}) trains at "
            f"{t['it_per_s']:.2f} iterations/s ({t['samples_per_s']:.2f} samples/s)."
        )
    if "budgets" in res:
        bud = res["budgets"]
        parts = [
            f"nnU-Net ran {bud['nnunet']['epochs_run']} epochs of {NNUNET_ITERS} iterations "
            f"(planned {bud['nnunet']['epochs_planned']})"
        ]
        for arm in [a for a in bud if isinstance(bud[a], dict) and "steps_run" in bud[a]]:
            parts.append(
                f"medtl {arm} {bud[arm]['steps_run']} of {bud[arm]['steps_planned']} steps"
            )
        extra.append(
            "Training to the largest budget: "
            + "; ".join(parts)
            + f"; {bud['test_cases']} held-out cases."
        )
    if res.get("pretrain", {}).get("timing"):
        extra.append(
            f"medtl's pretraining (one-off, reused by every pretrained arm and fold) took "
            f"{res['pretrain']['timing']['wall_s']:.0f} s, not counted in the budgets."
        )
    if "dicom" in res:
        dcm = res["dicom"]
        gz = (
            f"gzip level {dcm['level']} (medtl) and {dcm['dcm2niix_level']} (dcm2niix)"
            if dcm["compress"]
            else "uncompressed"
        )
        extra.append(
            f"DICOM set: {dcm['total_mb']:.0f} MB; dcm2niix {dcm['dcm2niix']['version']}; {gz}; "
            f"outputs {'hold the same voxels' if dcm['agreement']['agree'] else '**differ**'}."
        )
    return "\n".join(lines + [""] + extra) + "\n"


def write_doc(path: Path, body: str) -> None:
    """Replace the text between the bench markers of ``path`` (or create the file)."""
    block = f"{START}\n{body}{END}"
    if path.is_file():
        text = path.read_text()
        if START in text and END in text:
            text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    else:
        text = f"# Benchmarks\n\n{block}\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--config",
        default=str(ROOT / "config" / "config.yaml"),
        help="medtl workflow config (model, schedule, arms, folds); default: the demo's",
    )
    ap.add_argument(
        "--data", help="your data set instead of the demo: anything `medtl ingest` reads"
    )
    ap.add_argument("--modality", help="CT or MR for NIfTI data (default: the config's)")
    ap.add_argument(
        "--work", default=str(HERE / "work"), help="working folder (default: benchmarks/work)"
    )
    ap.add_argument(
        "--nnunet-venv", default=str(HERE / ".venv-nnunet"), help="nnU-Net's virtual environment"
    )
    ap.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks.md"), help="Markdown file to update"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="cores each tool gets")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each timed command (median)")
    ap.add_argument(
        "--budgets",
        default="1,2.5,5",
        help="training budgets in minutes from launch, comma-separated (default 1,2.5,5)",
    )
    ap.add_argument("--arms", default="scratch,finetune", help="medtl arms to train to the budgets")
    ap.add_argument(
        "--fold", type=int, default=0, help="the fold both tools train and are scored on"
    )
    ap.add_argument(
        "--infer-repeats",
        type=int,
        default=2,
        help="repeats of each inference run (each repeat runs all held-out cases, then one)",
    )
    ap.add_argument(
        "--from-json",
        help="only write the table again from a results.json of an earlier run",
    )
    ap.add_argument(
        "--probe-steps", type=int, default=30, help="steps of medtl's throughput probes"
    )
    ap.add_argument("--nnunet-device", default="cpu", help="cpu or cuda for nnU-Net")
    ap.add_argument(
        "--only",
        default="preprocess,throughput,budgets,inference,dicom",
        help="parts to run, comma-separated (later parts need earlier ones)",
    )
    a = ap.parse_args(argv)
    a.budgets = sorted(float(x) for x in a.budgets.split(","))
    a.arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    a.only = {x.strip() for x in a.only.split(",")}
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.from_json:
        body = markdown(json.loads(Path(a.from_json).read_text()))
        print(body)
        write_doc(Path(a.out), body)
        return 0
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
    res["total_min"] = (time.perf_counter() - start) / 60
    (b.work / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    body = markdown(res)
    print("\n" + body)
    write_doc(Path(a.out), body)
    b.say(f"table written to {a.out}; every number in {b.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
