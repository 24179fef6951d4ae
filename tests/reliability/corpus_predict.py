"""Corpus entries: ``medtl predict`` on a finished run, and where it may write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.layout import run_dir
from tests.reliability.corpus import ACCEPTED, ERROR, SET_ASIDE, Outcome, case, run_cli, write_nifti

ARM = "finetune"


def finished_run(results: Path, arms: tuple[str, ...] = (ARM,), best: object = "object") -> Path:
    """The parts of a finished run that ``medtl predict`` reads: the plan, a fold model per
    arm (a tiny network with random weights, saved as the train stage saves it) and the
    report's ``summary.json`` naming the best arm (``best="object"``: as the report writes
    it, ``{"arm": ..., "mean_dice": ...}``; ``None``: no report)."""
    import torch

    from medtl.config import ModelConfig, TrainConfig
    from medtl.models.networks import build_network
    from medtl.preprocess.plan import Plan
    from medtl.train.loop import RunSpec, checkpoint_payload

    Plan(
        modality="MR",
        target_spacing=(2.0, 2.0, 2.0),
        normalization="zscore",
        intensity={},
        crop_foreground=False,
        median_shape=(8, 8, 6),
        n_cases=2,
        classes={"1": "tumour"},
    ).save(results / "preprocess" / "plan.json")
    model_cfg = ModelConfig(features=(4, 4, 8, 8, 16, 4))
    spec = RunSpec(
        model=model_cfg,
        train=TrainConfig(patch_size=(32, 32, 16)),
        num_classes=2,
        classes={"1": "tumour"},
        seed=1,
        tags={},
    )
    for arm in arms:
        torch.manual_seed(0)
        payload = checkpoint_payload(build_network(model_cfg, 1, 2), spec, 1, 0.5)
        path = run_dir(results, arm, 1, 0) / "best.pt"
        path.parent.mkdir(parents=True)
        torch.save(payload, path)
    if best is not None:
        (results / "report").mkdir(parents=True)
        best_arm = {"arm": arms[0], "mean_dice": 0.0166} if best == "object" else best
        (results / "report" / "summary.json").write_text(json.dumps({"best_arm": best_arm}))
    return results


def scans(folder: Path, names: tuple[str, ...] = ("scan_a", "scan_b")) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        write_nifti(folder / f"{name}.nii.gz", rng.normal(100, 10, (8, 8, 6)), dtype="float32")
    return folder


def predict_outcome(
    source: Path, results: Path, out: Path, target: str = "", extra: tuple[str, ...] = ()
) -> Outcome:
    """Run ``medtl predict SOURCE --model RESULTS --out OUT``: *error* when it stops, *set
    aside* when ``out/rejected.tsv`` names ``target``, else *accepted*; ``details`` holds
    ``predictions`` (the table) and ``files`` (the names in ``out``)."""
    code, text, tb = run_cli(
        ["predict", source, "--model", results, "--out", out, "--quiet", "--device", "cpu"]
        + list(extra)
    )
    if tb or code != 0:
        return Outcome(ERROR, text, tb, out)
    details = {"files": sorted(p.name for p in out.iterdir())}
    table = out / "predictions.tsv"
    details["predictions"] = pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False)
    rejected = out / "rejected.tsv"
    if target and rejected.is_file():
        rows = pd.read_csv(rejected, sep="\t", dtype=str, keep_default_na=False)
        hits = rows[rows["path"].str.contains(target, regex=False)]
        if len(hits):
            message = " | ".join(f"{r.path}: {r.reason}. Fix: {r.fix}" for r in hits.itertuples())
            return Outcome(SET_ASIDE, message, "", out, details)
    return Outcome(ACCEPTED, text, "", out, details)


def _predicted(arm: str, n: int):
    def check(outcome: Outcome) -> None:
        table = outcome.details["predictions"]
        assert len(table) == n and set(table["arm"]) == {arm}, table

    return check


@case(
    "predict_without_arm_uses_the_reports_best_arm",
    "predict",
    "no `--arm`, and the report's `best_arm` written as `{arm, mean_dice}`",
    ACCEPTED,
    r"predict: 2 cases",
    check=_predicted(ARM, 2),
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    return lambda: predict_outcome(
        root / "in" / "scans", root / "in" / "results", root / "out" / "masks"
    )


@case(
    "predict_best_arm_as_a_plain_name",
    "predict",
    "a report of an earlier version: `best_arm` written as a plain name",
    ACCEPTED,
    r"predict: 2 cases",
    check=_predicted("scratch", 2),
)
def _(root):
    finished_run(root / "in" / "results", arms=("scratch", ARM), best="scratch")
    scans(root / "in" / "scans")
    return lambda: predict_outcome(
        root / "in" / "scans", root / "in" / "results", root / "out" / "masks"
    )


@case(
    "predict_no_report_and_several_arms",
    "predict",
    "no report, two arms trained, no `--arm`",
    ERROR,
    r"no report names the best arm.*finetune, scratch.*--arm",
)
def _(root):
    finished_run(root / "in" / "results", arms=(ARM, "scratch"), best=None)
    scans(root / "in" / "scans")
    return lambda: predict_outcome(
        root / "in" / "scans", root / "in" / "results", root / "out" / "masks"
    )


@case(
    "predict_unknown_arm",
    "predict",
    "`--arm` names an arm the run did not train",
    ERROR,
    r"no trained models for arm 'fintune' \(arms found: finetune\)",
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    return lambda: predict_outcome(
        root / "in" / "scans",
        root / "in" / "results",
        root / "out" / "masks",
        extra=("--arm", "fintune"),
    )


@case(
    "predict_unknown_format",
    "predict",
    "`--format png`",
    ERROR,
    r"unknown output format 'png'.*use any of nifti, seg, rtstruct",
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    return lambda: predict_outcome(
        root / "in" / "scans",
        root / "in" / "results",
        root / "out" / "masks",
        extra=("--format", "nifti,png"),
    )


@case(
    "predict_out_is_the_input_folder",
    "predict",
    "`medtl predict scans --out scans` (once replaced each scan with its mask)",
    ERROR,
    r"--out is the input itself.*never writes over or inside its input",
    names="scans",
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    return lambda: predict_outcome(
        root / "in" / "scans", root / "in" / "results", root / "in" / "scans"
    )


@case(
    "predict_out_inside_the_input_folder",
    "predict",
    "`--out scans/masks`, inside the folder of scans",
    ERROR,
    r"--out lies inside the input folder",
    names="masks",
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    return lambda: predict_outcome(
        root / "in" / "scans", root / "in" / "results", root / "in" / "scans" / "masks"
    )


@case(
    "predict_out_inside_the_run",
    "predict",
    "`--out results/masks`, inside the finished run it reads",
    ERROR,
    r"--out lies inside the input folder .*results",
    names="masks",
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    return lambda: predict_outcome(
        root / "in" / "scans", root / "in" / "results", root / "in" / "results" / "masks"
    )


@case(
    "predict_out_holding_the_input",
    "predict",
    "`--out .` with the scans in `./scans`",
    ERROR,
    r"--out contains the input",
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    return lambda: predict_outcome(root / "in" / "scans", root / "in" / "results", root / "in")


def _only_this_run(outcome: Outcome) -> None:
    files = outcome.details["files"]
    assert "old_case.nii.gz" not in files and "rejected.tsv" not in files, files
    assert sorted(f for f in files if f.endswith(".nii.gz")) == ["scan_a.nii.gz", "scan_b.nii.gz"]


@case(
    "predict_into_an_older_prediction",
    "predict",
    "`--out` holds an older prediction: other cases' masks, a `rejected.tsv`",
    ACCEPTED,
    r"predict: 2 cases",
    check=_only_this_run,
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    old = root / "out" / "masks"
    old.mkdir()
    (old / "old_case.nii.gz").write_bytes(b"an older run's mask")
    (old / "predictions.tsv").write_text("case_id\nold_case\n")
    (old / "rejected.tsv").write_text("path\treason\tfix\nx.nii.gz\tstale\tnone\n")
    return lambda: predict_outcome(root / "in" / "scans", root / "in" / "results", old)


@case(
    "predict_out_holding_other_files",
    "predict",
    "`--out` is a folder of the user's own files",
    ERROR,
    r"already holds files that `medtl predict` did not write \(e\.g\. notes\.txt\)",
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    (root / "out" / "mine").mkdir()
    (root / "out" / "mine" / "notes.txt").write_text("keep me")
    return lambda: predict_outcome(
        root / "in" / "scans", root / "in" / "results", root / "out" / "mine"
    )


@case(
    "predict_a_bad_scan_beside_good_ones",
    "predict",
    "a folder of scans, one of them not readable",
    SET_ASIDE,
    r"cannot read",
    names="broken.nii.gz",
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    (root / "in" / "scans" / "broken.nii.gz").write_text("not a scan")
    return lambda: predict_outcome(
        root / "in" / "scans", root / "in" / "results", root / "out" / "masks", "broken.nii.gz"
    )


@case(
    "predict_no_usable_scan",
    "predict",
    "every scan unreadable",
    ERROR,
    r"no case could be segmented.*broken\.nii\.gz.*cannot read",
)
def _(root):
    finished_run(root / "in" / "results")
    (root / "in" / "scans").mkdir()
    (root / "in" / "scans" / "broken.nii.gz").write_text("not a scan")
    return lambda: predict_outcome(
        root / "in" / "scans", root / "in" / "results", root / "out" / "masks"
    )


@case(
    "predict_model_is_not_a_run",
    "predict",
    "`--model` names a folder that is not a finished run",
    ERROR,
    r"(preprocessing plan not found|no trained models|no report names the best arm)",
)
def _(root):
    (root / "in" / "elsewhere").mkdir()
    (root / "in" / "elsewhere" / "readme.txt").write_text("not a run")
    scans(root / "in" / "scans")
    return lambda: predict_outcome(
        root / "in" / "scans", root / "in" / "elsewhere", root / "out" / "masks"
    )


@case(
    "predict_out_is_the_current_folder",
    "predict",
    "`--out .` from an empty folder (the output folder is replaced as a whole)",
    ERROR,
    r"--out is the current folder .*give --out a folder of its own",
)
def _(root):
    finished_run(root / "in" / "results")
    scans(root / "in" / "scans")
    here = root / "out" / "here"
    here.mkdir()

    def run() -> Outcome:
        before = os.getcwd()
        os.chdir(here)
        try:
            return predict_outcome(root / "in" / "scans", root / "in" / "results", Path("."))
        finally:
            os.chdir(before)

    return run
