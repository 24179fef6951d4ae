"""nnU-Net's side of the benchmark: its budget trainer installed, training to budgets
with snapshots, and prediction.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from bench_common import DATASET_ID, HERE, TRAINER, Bench
from measure import Timing


def nnunet_train(b: Bench, d: dict, epochs: int, marks: list[float], tag: str) -> dict:
    """Train nnU-Net fold ``--fold`` with the budget trainer; parse its log."""
    folder = b.nn_res / d["raw"].name / f"{TRAINER}__{b.plans}__3d_fullres" / f"fold_{b.args.fold}"
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.time()
    env = b.nnunet_env(
        MEDTL_BENCH_T0=repr(t0),
        MEDTL_BENCH_MARKS=",".join(f"{m:.1f}" for m in marks),
        MEDTL_BENCH_EPOCHS=str(epochs),
        MEDTL_BENCH_ITERS=str(b.nnunet_iters),
    )
    t = b.run(
        [
            b.nn("nnUNetv2_train"),
            DATASET_ID,
            "3d_fullres",
            b.args.fold,
            "-tr",
            TRAINER,
            "-p",
            b.plans,
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
        "s_per_iter": statistics.median(steady) / b.nnunet_iters if steady else float("nan"),
        "startup_s": float(first.group(1)) if first else float("nan"),
        "epochs_run": len(train_s),
        "marks_at_s": [float(x) for x in re.findall(r"budget mark \d+: ([0-9.]+) s", text)],
    }


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
        "-p",
        b.plans,
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
