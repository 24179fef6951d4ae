"""Prediction stages: held-out cases of one training run, and new cases with the ensemble
of an arm's training runs (its folds × seeds)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medtl.config import PredictConfig
from medtl.io.ingest import ingest_path
from medtl.io.outputs import check_separate, fresh_folder
from medtl.kernel.device import torch_device
from medtl.kernel.errors import InputError
from medtl.kernel.files import atomic_write_text
from medtl.layout import (
    TrainedRun,
    arm_dir,
    plan_file,
    runs_of_arm,
    trained_runs,
)
from medtl.models.trained import checkpoint_multiple, load_model
from medtl.postprocess.choose import decision_path, describe_decision, load_decision
from medtl.predict.inference import Ensemble, segment_case
from medtl.predict.maps import MapRequest, segment_case_with_maps
from medtl.predict.onnx_engine import onnx_engine, onnx_ensemble
from medtl.preprocess.case import preprocess_files
from medtl.preprocess.plan import Plan
from medtl.trust.decision import load_trust


def find_fold_models(results: Path, arm: str, seeds: Sequence[int] | None = None) -> list[Path]:
    """The ``best.pt`` of every training run (fold × seed) of ``arm`` in a finished run."""
    return [r.path for r in ensemble_members(results, arm, seeds)]


def ensemble_members(
    results: Path, arm: str, seeds: Sequence[int] | None = None
) -> list[TrainedRun]:
    """The training runs of ``arm`` whose models are averaged: every fold of every seed,
    or of the ``seeds`` named (an earlier version's runs, without seed, when none is named).

    Raises:
        InputError: the arm has no trained model, or none of the seeds named.
    """
    results = Path(results)
    runs = runs_of_arm(
        results, arm, "give --model the results folder of a finished run and an arm it trained"
    )
    if seeds:
        chosen = [r for r in runs if r.seed in set(seeds)]
        missing = sorted(set(seeds) - {r.seed for r in chosen})
        if missing:
            have = sorted({r.seed for r in runs if r.seed is not None})
            raise InputError(
                arm_dir(results, arm),
                f"arm {arm!r} has no model of seed {missing[0]} (its seeds: "
                f"{', '.join(map(str, have)) or 'none'})",
                "name seeds the arm was trained with, or leave --seeds out to use them all",
            )
        return chosen
    return runs


def describe_members(runs: Sequence[TrainedRun]) -> str:
    """How many models an ensemble averages, e.g. ``6 models (3 folds × 2 seeds)``."""
    folds = len({r.fold for r in runs})
    seeds = len({r.seed for r in runs})
    models = f"{len(runs)} model" + ("s" if len(runs) != 1 else "")
    fold_txt = f"{folds} fold" + ("s" if folds != 1 else "")
    seed_txt = f"{seeds} seed" + ("s" if seeds != 1 else "")
    return f"{models} ({fold_txt} × {seed_txt})"


def default_arm(results: Path) -> str:
    """The arm the run's report found best; the only arm trained; else an error.

    The report's ``summary.json`` writes ``best_arm`` as ``{"arm": NAME, "mean_dice": x}``
    (an earlier version wrote the name alone; both are read).
    """
    results = Path(results)
    summary = results / "report" / "summary.json"
    if summary.is_file():
        try:
            best = json.loads(summary.read_text()).get("best_arm")
        except ValueError as exc:
            raise InputError(
                summary, f"not valid JSON ({exc})", "rerun the workflow's report rule"
            ) from exc
        if isinstance(best, dict):
            best = best.get("arm")
        if isinstance(best, str) and best:
            return best
    arms = sorted(r.arm for r in trained_runs(results))
    if len(set(arms)) == 1:
        return arms[0]
    raise InputError(
        results,
        "no report names the best arm"
        + (f" and several arms were trained ({', '.join(sorted(set(arms)))})" if arms else "")
        + (" and no trained model was found" if not arms else ""),
        "name the arm with --arm, or give --model the results folder of a finished run",
    )


OUTPUT_FORMATS = ("nifti", "seg", "rtstruct")


def _series_by_uid(source: Path, workers: int) -> dict[str, object]:
    """The DICOM series under ``source`` (a folder or a sheet's folder), by SeriesInstanceUID."""
    from medtl.io.dicom import discover

    root = source if source.is_dir() else source.parent
    return {s.series_uid: s for s in discover(root, workers=workers).series}


def _write_dicom_outputs(
    labels,
    row,
    series_index: dict,
    formats: tuple[str, ...],
    classes: dict[int, str],
    out: Path,
    arm: str,
) -> list[str]:
    """DICOM-SEG / RTSTRUCT files of a mask, referencing the case's source series."""
    from medtl import __version__

    series = series_index.get(getattr(row, "series_uid", "") or "")
    if series is None:
        return []
    written = []
    if "seg" in formats:
        from medtl.io.dicomseg import write_seg

        path = out / f"{row.case_id}.seg.dcm"
        write_seg(labels, series, classes, path, algorithm=f"medtl {arm}", version=__version__)
        written.append(str(path))
    if "rtstruct" in formats:
        from medtl.io.rtstruct_write import write_rtstruct

        path = out / f"{row.case_id}.rtstruct.dcm"
        write_rtstruct(labels, series, classes, path, algorithm=f"medtl {arm}", version=__version__)
        written.append(str(path))
    return written


def _decision_for(results: Path, arm: str, classes: dict[int, str]) -> dict | None:
    """The arm's post-processing decision, checked against the run's classes (or None)."""
    decision = load_decision(results, arm)
    if decision is None:
        return None
    for name, entry in decision["classes"].items():
        if classes.get(int(entry["value"])) != name:
            raise InputError(
                decision_path(results, arm),
                f"class {name!r} has label value {entry['value']} there, but the run's plan "
                f"names the classes {classes}",
                "delete the decision and rerun the workflow's 'postprocess' rule for this run",
            )
    return decision


def predict_new(
    source: Path,
    results: Path,
    out: Path,
    arm: str | None = None,
    cfg: PredictConfig | None = None,
    device_name: str = "auto",
    salt: str = "medtl",
    progress: bool = True,
    formats: tuple[str, ...] = ("nifti",),
    workers: int = 4,
    postprocess: bool = True,
    seeds: Sequence[int] | None = None,
    maps: MapRequest | None = None,
    engine: str = "torch",
) -> pd.DataFrame:
    """Segment new cases (a DICOM folder, NIfTI file or folder, or case sheet).

    Uses the mean probabilities of the models of ``arm`` (the ensemble: every fold of
    every seed it was trained with, or of ``seeds``) and the run's preprocessing plan.
    Writes ``out/<case>.nii.gz`` on each input's original grid and, for DICOM input
    with ``formats`` asking for them, ``out/<case>.seg.dcm``
    (DICOM-SEG) and ``out/<case>.rtstruct.dcm`` referencing the source series, so they
    open in a PACS viewer or a planning system; ``out/predictions.tsv`` lists them.

    With ``cfg.tta`` every fold model also predicts the mirrored copies of each case. With
    ``postprocess`` (the default) the arm's post-processing decision chosen on
    cross-validation (``results/postprocess/<arm>.json``, when the run has one) is applied
    to each mask; the table's ``postprocess`` column says what was applied per class.

    ``maps`` asks for uncertainty maps and scores and/or the mean probabilities per case
    (:mod:`medtl.predict.maps`); the masks are the same with or without them. When the
    run fitted the arm's trust (``results/trust/<arm>.json``, :mod:`medtl.trust.cv`), the
    probabilities written are calibrated and the table gains ``risk`` (the per-case score
    chosen on cross-validation, higher = more likely a bad mask) and ``flag`` (risk at or
    above the threshold chosen on cross-validation: check this mask by hand).

    With ``engine="onnxruntime"``, ``results`` is a folder written by ``medtl export-onnx``
    and ONNX Runtime runs its networks on the CPU (:mod:`medtl.predict.onnx_engine`);
    everything else is the same.
    """
    _check_formats(formats)
    cfg = cfg or PredictConfig()
    source, results, out = Path(source), Path(results), Path(out)
    # Before anything is read: the masks never land in, over or around the scans or the run.
    check_separate(out, [source, results])
    ens = _load_ensemble(results, arm, seeds, engine, device_name, postprocess)
    arm, plan, classes, members = ens.arm, ens.plan, ens.classes, ens.members
    ensemble = describe_members(members)
    applied = describe_decision(ens.decision)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="medtl-predict-") as tmp,
        fresh_folder(
            out, "predict", known=PREDICT_OUTPUTS, signature=("predictions.tsv", "rejected.tsv")
        ) as staging,
    ):
        manifest, rejected = _ingest_new(source, Path(tmp) / "ingest", salt, workers)
        dicom_formats = tuple(f for f in formats if f != "nifti")
        has_dicom = "series_uid" in manifest and (manifest["series_uid"].fillna("") != "").any()
        series_index = _series_by_uid(source, workers) if dicom_formats and has_dicom else {}
        for row in tqdm(
            list(manifest.itertuples()),
            desc=f"predict ({arm}, {ensemble})",
            disable=not progress,
        ):
            case = preprocess_files(Path(row.image), None, plan)
            name = f"{row.case_id}.nii.gz"
            labels, extra = _segment(ens, case, cfg, staging / name, maps, out)
            dicom = _write_dicom_outputs(
                labels, row, series_index, dicom_formats, classes, staging, arm
            )
            rows.append(
                _table_row(row, out / name, dicom, out, arm, members, applied, labels) | extra
            )
        if len(rejected):
            atomic_write_text(staging / "rejected.tsv", rejected.to_csv(sep="\t", index=False))
        table = pd.DataFrame(rows)
        atomic_write_text(staging / "predictions.tsv", table.to_csv(sep="\t", index=False))
    return table


def _load_ensemble(
    results: Path,
    arm: str | None,
    seeds: Sequence[int] | None,
    engine: str,
    device_name: str,
    postprocess: bool,
) -> Ensemble:
    """The arm's ensemble from a results folder (PyTorch) or an export-onnx folder."""
    if onnx_engine(engine, results):
        return onnx_ensemble(results, arm, seeds, postprocess)
    arm = arm or default_arm(results)
    plan = Plan.load(plan_file(results))
    device = torch_device(device_name)
    members = ensemble_members(results, arm, seeds)
    loaded = [load_model(r.path, device) for r in members]
    decision = _decision_for(results, arm, dict(plan.class_map)) if postprocess else None
    models = [m for m, _ in loaded]
    patch = loaded[0][1]["patch_size"]
    trust = load_trust(results, arm)
    multiple = checkpoint_multiple(loaded[0][1])
    return Ensemble(arm, plan, members, models, patch, decision, device, trust, multiple)


def _segment(
    ens: Ensemble,
    case,
    cfg: PredictConfig,
    path: Path,
    maps: MapRequest | None,
    listed: Path,
) -> tuple[np.ndarray, dict[str, object]]:
    """One case's mask at ``path``, and the maps and scores ``maps`` asks for (table columns).

    With the arm's trust rule, the scores are computed whatever ``maps`` asks, for the
    ``risk`` and ``flag`` columns.
    """
    trust = ens.trust
    if trust is None and (maps is None or not maps.wanted):
        labels = segment_case(
            ens.models,
            case,
            ens.patch_size,
            cfg,
            ens.device,
            path,
            postprocess=ens.decision,
            multiple=ens.multiple,
        )
        return labels, {}
    if trust is not None:
        maps = replace(maps or MapRequest(), scores=trust.measure is not None)
    labels, columns = segment_case_with_maps(
        ens.models,
        case,
        ens.patch_size,
        cfg,
        ens.device,
        path,
        maps,
        postprocess=ens.decision,
        listed=listed,
        temperature=trust.temperature if trust is not None else 1.0,
        multiple=ens.multiple,
    )
    if trust is not None:
        risk, flag = trust.risk_and_flag(columns)
        columns |= {"risk": risk, "flag": flag}
    return labels, columns


def _check_formats(formats: tuple[str, ...]) -> None:
    bad = [f for f in formats if f not in OUTPUT_FORMATS]
    if bad:
        raise InputError(
            ",".join(formats),
            f"unknown output format {bad[0]!r}",
            f"use any of {', '.join(OUTPUT_FORMATS)}",
        )


def _ingest_new(
    source: Path, folder: Path, salt: str, workers: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The new cases' manifest and the inputs set aside (images only, no labels; written
    uncompressed into the temporary ``folder``, which is read once)."""
    try:
        return ingest_path(
            source, folder, salt, progress=False, workers=workers, labels=False, compress=False
        )
    except InputError as exc:
        raise _no_usable_case(exc, folder / "rejected.tsv") from exc


def _table_row(
    row,
    mask: Path,
    dicom: list[str],
    out: Path,
    arm: str,
    members: Sequence[TrainedRun],
    applied: str,
    labels,
) -> dict[str, object]:
    """One case's row of ``predictions.tsv``."""
    return {
        "case_id": row.case_id,
        "patient_id": row.patient_id,
        "mask": str(mask),
        "dicom": ";".join(str(out / Path(d).name) for d in dicom),
        "arm": arm,
        "models": len(members),
        "folds": len({r.fold for r in members}),
        "seeds": ",".join(str(s) for s in sorted({r.seed for r in members if r.seed is not None})),
        "postprocess": applied,
        "foreground_voxels": int((labels > 0).sum()),
    }


#: What ``medtl predict`` writes into ``--out`` (to recognise an earlier version's output).
PREDICT_OUTPUTS = ("predictions.tsv", "rejected.tsv", "*.nii.gz", "*.seg.dcm", "*.rtstruct.dcm")


def _no_usable_case(exc: InputError, listing: Path) -> InputError:
    """Ingest found no case to segment: the error, with every reason (nothing is written)."""
    if not listing.is_file():
        return exc
    table = pd.read_csv(listing, sep="\t", dtype=str, keep_default_na=False)
    if table.empty:
        return exc
    reasons = "; ".join(f"{r.path}: {r.reason} (fix: {r.fix})" for r in table.itertuples())
    return InputError(exc.path, f"no case could be segmented. Set aside: {reasons}", exc.fix)
