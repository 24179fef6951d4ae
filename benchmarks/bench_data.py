"""The benchmark's data: the data set ingested, split and exported to nnU-Net with medtl's
folds (not timed), both tools' preprocessing (timed), and the DICOM conversion.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
from bench_common import DATASET_ID, DATASET_NAME, ROOT, Bench, compact
from measure import Timing, median_timing


def data_sets(b: Bench, cfg: dict) -> tuple[Path, Path | None]:
    """The target data set and the labelled source set (None: no pretraining on one of
    ours): ``--data`` and the config's own source, or the demo's (generated if missing)."""
    a, data = b.args, b.work / "data"
    if a.data:
        target, source = Path(a.data).resolve(), None
        own_source = str(cfg["pretrain"]["source"] or "")
        if (
            not cfg["pretrain"]["checkpoint"]
            and own_source
            and not own_source.startswith("data/demo")
        ):
            source = (ROOT / own_source).resolve()
        return target, source
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
    return data / "target" / "cases.tsv", data / "source"


def ingest(b: Bench, cfg: dict, target: Path, source: Path | None, modality: str) -> None:
    """medtl ingests the target (to ``medtl/ingest``) and the source (``medtl/source``),
    each unless already there."""
    med = b.work / "medtl"
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


def split_and_export(b: Bench, cfg: dict) -> Path:
    """medtl's patient-grouped folds (``medtl/folds.json``, returned), and the ingested
    cases exported to nnU-Net's raw format with those folds."""
    med = b.work / "medtl"
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
    return folds


def prepare(b: Bench, cfg: dict) -> dict:
    """Ingest, split and export to nnU-Net (with the same folds). Not timed."""
    from medtl.export.nnunet import check_same_folds

    med = b.work / "medtl"
    target, source = data_sets(b, cfg)
    modality = b.args.modality or cfg["dataset"]["modality"]
    ingest(b, cfg, target, source, modality)
    folds = split_and_export(b, cfg)
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
        planner = ["-pl", b.planner] if b.planner else []
        cmd = [b.nn("nnUNetv2_plan_and_preprocess"), "-d", DATASET_ID, "-c", "3d_fullres"]
        cmd += [*planner, "-np", b.threads, *getattr(b.args, "nnunet_plan_args", [])]
        nn_t.append(b.run(cmd, "nnunet_plan_and_preprocess", env=b.nnunet_env()))
    pre = b.nn_pre / d["raw"].name
    shutil.copy(d["raw"] / "splits_final.json", pre / "splits_final.json")
    from medtl.export.nnunet import check_same_folds

    check_same_folds(d["folds_data"], json.loads((pre / "splits_final.json").read_text()))
    plans = json.loads((pre / f"{b.plans}.json").read_text())
    fullres = plans["configurations"]["3d_fullres"]
    arch = fullres["architecture"]
    return {
        "medtl": median_timing(medtl_t),
        "nnunet": median_timing(nn_t),
        "nnunet_patch_zyx": list(map(int, fullres["patch_size"])),
        "nnunet_batch": int(fullres["batch_size"]),
        "nnunet_features": list(arch["arch_kwargs"]["features_per_stage"]),
        "nnunet_strides_zyx": arch["arch_kwargs"]["strides"],
        "nnunet_network": arch["network_class_name"].rsplit(".", 1)[-1],
        "nnunet_architecture": arch,
        "medtl_plan": json.loads((med / "plan.json").read_text()),
    }


def dicom(b: Bench, spec=None) -> dict:
    """``medtl convert`` against ``dcm2niix`` on ``spec`` (a ``dicom_convert.SeriesSet``;
    None: its default set)."""
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
        spec=spec,
    )


# ----------------------------------------------------------------------------- report
