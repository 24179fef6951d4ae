"""The benchmark's shared parts: its constants and targets, the run (:class:`Bench`: paths,
tools, logs), the config, and the Dice and timing helpers every stage uses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from bench_quiet import BUSY_SHARE, QuietSampler
from measure import Timing, run_timed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

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
        # nnU-Net's planner (None: its default) and the plans identifier it writes
        self.planner = getattr(args, "planner", None)
        self.plans = getattr(args, "plans", "nnUNetPlans")
        # nnU-Net's training iterations per epoch, and the epochs of its throughput probe
        self.nnunet_iters = getattr(args, "nnunet_iters", NNUNET_ITERS)
        self.probe_epochs = getattr(args, "probe_epochs", 3)

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


def measured_run(b: Bench, start: float, measure: Callable[[], None]) -> dict:
    """Run ``measure`` under the quiet sampler and save every number: ``b.results`` with
    the machine's quietness and the run's minutes since ``start`` (``perf_counter``), in
    ``<work>/results.json`` (a refused run keeps its numbers there). The parts it ran
    (``only``) and could have run (``all_parts``) are recorded first, for
    :func:`bench_table.partial_run`."""
    b.results["only"] = sorted(b.args.only)
    b.results["all_parts"] = sorted(p.strip() for p in b.args.all_parts.split(","))
    with QuietSampler() as quiet:
        measure()
    res = b.results
    res["quiet"] = quiet.result.as_dict()
    res["total_min"] = (time.perf_counter() - start) / 60
    (b.work / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    b.say(f"every number in {b.work / 'results.json'}")
    return res


def bench_parser(
    doc: str,
    *,
    config: Path,
    work: Path,
    budgets: str,
    probe_steps: int,
    only: str,
    repeats: int,
    infer_repeats: int,
) -> argparse.ArgumentParser:
    """The options every benchmark harness takes, with that harness's defaults."""
    ap = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--config",
        default=str(config),
        help=f"medtl workflow config (model, schedule, arms, folds); default: {config.name}",
    )
    ap.add_argument("--work", default=str(work), help=f"working folder (default: {work.name})")
    ap.add_argument(
        "--nnunet-venv", default=str(HERE / ".venv-nnunet"), help="nnU-Net's virtual environment"
    )
    ap.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks.md"), help="Markdown file to update"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="cores each tool gets")
    ap.add_argument(
        "--repeats", type=int, default=repeats, help="repeats of each timed command (median)"
    )
    ap.add_argument(
        "--budgets",
        default=budgets,
        help=f"training budgets in minutes from launch, comma-separated (default {budgets})",
    )
    ap.add_argument(
        "--fold", type=int, default=0, help="the fold both tools train and are scored on"
    )
    ap.add_argument(
        "--infer-repeats",
        type=int,
        default=infer_repeats,
        help="repeats of each inference run (each repeat runs all held-out cases, then one)",
    )
    ap.add_argument(
        "--from-json",
        help="only write the table again from a results.json of an earlier run",
    )
    ap.add_argument(
        "--probe-steps", type=int, default=probe_steps, help="steps of medtl's throughput probes"
    )
    ap.add_argument("--nnunet-device", default="cpu", help="cpu or cuda for nnU-Net")
    ap.add_argument(
        "--medtl-window",
        default="image",
        help="medtl predict --window in the inference rows: patch (the training patch, as "
        "nnU-Net predicts), image (one window over a small case; default) or x,y,z",
    )
    ap.add_argument(
        "--busy-threshold",
        type=float,
        default=BUSY_SHARE,
        help="share of the machine's CPU that other processes may use during the run "
        f"(default {BUSY_SHARE}: {100 * BUSY_SHARE:g} %%); above it, or with a load average "
        "above half the cores before the start, the run is disturbed",
    )
    ap.add_argument(
        "--allow-disturbed",
        action="store_true",
        help="write the docs table even when the run was disturbed (marked so); without it "
        "a disturbed run only prints its table and saves results.json",
    )
    ap.add_argument(
        "--only",
        default=only,
        help=f"parts to run, comma-separated (later parts need earlier ones; default {only}); "
        "a partial run prints its table and leaves the docs as they are",
    )
    ap.set_defaults(all_parts=only)
    return ap


def finish_args(a: argparse.Namespace) -> argparse.Namespace:
    """Budgets as sorted minutes, arms and parts as lists and sets."""
    a.budgets = sorted(float(x) for x in a.budgets.split(","))
    if isinstance(getattr(a, "arms", None), str):
        a.arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    a.only = {x.strip() for x in a.only.split(",")}
    return a


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
