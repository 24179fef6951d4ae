"""Commands that segment: a fold's held-out cases, new cases, and the MONAI bundle export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtl.cli.common import FoldsJson, Quiet, Settings, Threads, app, guard, set_threads


@app.command("predict-fold")
@guard
def predict_fold(
    run: Annotated[Path, typer.Option(help="The fold's run folder (holds best.pt).")],
    folds: FoldsJson,
    fold: Annotated[int, typer.Option(help="Fold index.")],
    cases: Annotated[Path, typer.Option(help="Folder of preprocessed .npz cases.")],
    out: Annotated[Path, typer.Option(help="Folder for the masks.")],
    settings: Settings = "{}",
    trust: Annotated[
        str,
        typer.Option(
            help="The config's trust section as JSON: which voxels the calibration "
            "sample holds (band_voxels, voxels_per_case)."
        ),
    ] = "{}",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Threads = 1,
    quiet: Quiet = False,
) -> None:
    """Segment a fold's held-out cases; masks in the original image space.

    Beside the masks: cases.tsv (each case's uncertainty scores and seconds),
    calibration.npz (the voxels temperature scaling is fitted on) and prediction.json
    (model size, peak memory), which `medtl trust` reads.
    """
    from medtl.config import (
        PredictConfig,
        TrustConfig,
        check_device_name,
        load_json_arg,
        parse_section,
    )
    from medtl.predict.fold import predict_fold as predict_fold_cases

    set_threads(threads)
    cfg = parse_section(PredictConfig, load_json_arg(settings, "--settings"), "predict")
    trust_cfg = parse_section(TrustConfig, load_json_arg(trust, "--trust"), "trust")
    written = predict_fold_cases(
        run_dir=run,
        folds_path=folds,
        fold=fold,
        cases_dir=cases,
        out=out,
        cfg=cfg,
        device_name=check_device_name(device, "--device"),
        progress=not quiet,
        trust=trust_cfg,
    )
    typer.echo(f"predict fold {fold}: {len(written)} masks → {out}")


ONE_MEMBER = (
    "predict: one ensemble member (one model, no --tta): mutual information is 0, "
    "agreement_dice 1 and volume_cv 0 by construction; only the entropy says anything"
)

# The options `medtl predict` adds to segmenting: uncertainty maps, probabilities, engine.
Uncertainty = Annotated[
    bool,
    typer.Option(
        help="Also write CASE_entropy.nii.gz and CASE_mutual_info.nii.gz and add per-case "
        "scores (mean_entropy, agreement_dice, volume_cv, members) to predictions.tsv. See "
        "docs/predict.md."
    ),
]
SaveProbabilities = Annotated[
    bool,
    typer.Option(
        help="Also write CASE_probabilities.nii.gz: the mean probabilities, one channel per "
        "class (background first)."
    ),
]
Engine = Annotated[
    str,
    typer.Option(
        help="What runs the networks: torch (PyTorch, the default) or onnxruntime (ONNX "
        "Runtime on the CPU; --model is then an export-onnx folder)."
    ),
]


@app.command()
@guard
def predict(
    input: Annotated[
        Path,
        typer.Argument(help="New cases: a DICOM folder, a NIfTI file or folder, or a case sheet."),
    ],
    model: Annotated[
        Path,
        typer.Option(
            help="A finished run's results folder, or (with --engine onnxruntime) a folder "
            "written by medtl export-onnx."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for the masks (NIfTI, original grid).")],
    arm: Annotated[
        str | None,
        typer.Option(help="Which arm's models (default: the report's best arm)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    overlap: Annotated[float, typer.Option(help="Sliding-window overlap.")] = 0.5,
    tta: Annotated[
        bool,
        typer.Option(help="Test-time augmentation: average the 8 mirrored predictions."),
    ] = False,
    window: Annotated[
        str,
        typer.Option(
            help="Sliding-window size: patch (the training patch), image (sides from the "
            "patch up to the case's that compute the fewest voxels, windows of up to 16x "
            "the patch's voxels; basicunet runs a case that fits as one window of its own "
            "shape) or x,y,z. See docs/configuration.md."
        ),
    ] = "patch",
    format: Annotated[
        str,
        typer.Option(
            help="Output formats, comma-separated: nifti, seg (DICOM-SEG), rtstruct. "
            "seg and rtstruct reference the source series (DICOM input only)."
        ),
    ] = "nifti",
    seeds: Annotated[
        str,
        typer.Option(
            help="Which seeds' models to average, comma-separated (default: all the arm "
            "was trained with)."
        ),
    ] = "all",
    uncertainty: Uncertainty = False,
    save_probabilities: SaveProbabilities = False,
    engine: Engine = "torch",
    threads: Threads = 2,
    quiet: Quiet = False,
) -> None:
    """Segment new cases with the ensemble of a finished run's models of one arm.

    The probabilities of every fold model of every seed the arm was trained with (or of
    --seeds) are averaged (optionally over mirrored copies too, --tta), and the
    post-processing the run chose on cross-validation for the arm
    (`results/postprocess/<arm>.json`) is applied. The output says how many models it
    averaged; `predictions.tsv` lists them per case (models, folds, seeds).

    Example: `medtl predict scans/ --model results --out masks/ --format nifti,seg`
    """
    from medtl.config import PredictConfig, check_device_name, window_setting
    from medtl.predict.maps import MapRequest
    from medtl.predict.run import predict_new

    set_threads(threads)
    table = predict_new(
        input,
        model,
        out,
        arm,
        PredictConfig(overlap=overlap, tta=tta, window=window_setting(window)),
        check_device_name(device, "--device"),
        progress=not quiet,
        formats=tuple(f.strip() for f in format.split(",") if f.strip()),
        seeds=_seed_list(seeds),
        maps=MapRequest(uncertainty=uncertainty, probabilities=save_probabilities),
        engine=engine,
    )
    models = f", {table['models'].iloc[0]} models averaged" if len(table) else ""
    typer.echo(f"predict: {len(table)} cases → {out} (list in {out}/predictions.tsv{models})")
    if uncertainty and len(table) and int(table["members"].iloc[0]) == 1:
        typer.echo(ONE_MEMBER, err=True)


def _seed_list(text: str) -> list[int] | None:
    """`--seeds`: `all` (None), or comma-separated whole numbers."""
    if text.strip().lower() == "all":
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected 'all' or comma-separated seeds such as 1,2, got {text!r}",
            param_hint="--seeds",
        ) from None


@app.command("export-bundle")
@guard
def export_bundle(
    model: Annotated[Path, typer.Option(help="A finished run's results folder.")],
    arm: Annotated[str, typer.Option(help="The arm to export.")],
    out: Annotated[Path, typer.Option(help="The bundle folder to write.")],
    fold: Annotated[
        int | None, typer.Option(help="Which fold's model (default 0; a bundle holds one).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle folder.")] = False,
) -> None:
    """Write a trained arm as a MONAI bundle (configs/, models/model.pt, docs/).

    The bundle runs with MONAI alone (`python -m monai.bundle run --config_file
    configs/inference.json --dataset_dir IN --output_dir OUT`), so the model moves into
    MONAI Deploy or MONAI Label.
    """
    from medtl.export.bundle import export_bundle as write

    folder = write(model, arm, out, fold=fold, overwrite=overwrite)
    typer.echo(f"export-bundle: {arm} → {folder}")


@app.command("export-onnx")
@guard
def export_onnx(
    model: Annotated[Path, typer.Option(help="A finished run's results folder.")],
    arm: Annotated[str, typer.Option(help="The arm to export.")],
    out: Annotated[Path, typer.Option(help="The folder to write (replaced as a whole).")],
    seeds: Annotated[
        str,
        typer.Option(help="Which seeds' models, comma-separated (default: all of the arm)."),
    ] = "all",
    overlap: Annotated[float, typer.Option(help="Sliding-window overlap to record.")] = 0.5,
    tta: Annotated[bool, typer.Option(help="Record test-time mirroring as the setting.")] = False,
) -> None:
    """Write every model of an arm (each fold × seed) as ONNX, with a manifest.

    OUT gets one `.onnx` file per model `medtl predict` averages and `medtl-onnx.json`:
    the preprocessing plan, class map, patch size, sliding-window settings, the arm's
    post-processing, and each file's SHA-256. The networks take float32
    (batch, channels, x, y, z) and return logits; batch and spatial sizes are free, but
    each spatial side must be a multiple of the manifest's `divisor` (the sliding window
    feeds patch-sized windows, which are). Run the export with
    `medtl predict SOURCE --model OUT --out MASKS --engine onnxruntime` (ONNX Runtime,
    CPU), or with any ONNX engine following the manifest.
    """
    from medtl.config import PredictConfig
    from medtl.export.onnx import export_onnx as write

    manifest = write(
        model, arm, out, seeds=_seed_list(seeds), cfg=PredictConfig(overlap=overlap, tta=tta)
    )
    typer.echo(f"export-onnx: {arm} → {manifest.parent} (manifest {manifest.name})")
