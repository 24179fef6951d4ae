"""Commands that bring data in and out: demo data, ingest, convert, nnU-Net, DICOMweb."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtl.cli.common import Classes, Quiet, Settings, app, guard, parse_classes


@app.command("demo-data")
@guard
def demo_data(
    out: Annotated[Path, typer.Option(help="Folder to write the demo data into.")],
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same files.")] = 7,
    n_source: Annotated[int, typer.Option(help="Labelled source volumes (pretraining).")] = 24,
    n_patients: Annotated[int, typer.Option(help="Target patients (DICOM).")] = 14,
    shift: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=2.0,
            help="Shift strength of the target domain: 0 draws the target from the source "
            "domain, 1 is the demo's target domain, between interpolates intensities, "
            "contrast, noise, bias and spacing, above 1 (up to 2) extrapolates.",
        ),
    ] = 1.0,
    quiet: Quiet = False,
) -> None:
    """Generate the built-in demo: a NIfTI source set and a DICOM target set.

    Writes OUT/source (MSD-style dataset.json with NIfTI pairs) and OUT/target (DICOM
    series, NIfTI labels and cases.tsv pairing them).
    """
    from medtl.demo.generate import generate_demo

    s = generate_demo(
        out,
        seed=seed,
        n_source=n_source,
        n_patients=n_patients,
        progress=not quiet,
        shift=shift,
    )
    typer.echo(
        f"demo: {s.source_cases} source volumes, {s.target_cases} target cases "
        f"from {s.target_patients} patients; case sheet {s.sheet}"
    )


@app.command()
@guard
def ingest(
    source: Annotated[
        Path,
        typer.Argument(
            help="A DICOM folder (any tree; RTSTRUCT / DICOM-SEG labels are paired with the "
            "series they reference), a folder of image files (NIfTI, NRRD, MetaImage; "
            "images/ and labels/ are paired by name), an nnU-Net v2 / MSD folder with "
            "dataset.json, or a case sheet (.tsv or .csv)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: manifest.tsv, rejected.tsv, images/, labels/. A new folder "
            "(or an earlier ingest's output, which is replaced as a whole); never the input "
            "or a folder holding or inside it."
        ),
    ],
    salt: Annotated[str, typer.Option(help="Key for hashing patient IDs.")] = "medtl",
    modality: Annotated[
        str, typer.Option(help="Modality of image files (DICOM has its own).")
    ] = "unknown",
    classes: Annotated[
        str,
        typer.Option(
            help='Label value → class name as JSON, e.g. {"1": "tumour"}. Label files may '
            "hold only 0 and these values; RTSTRUCT, DICOM-SEG and Slicer segment names are "
            "matched to these names. Default: the labels a dataset.json declares, else any "
            'value 0-255, and names matched to {"1": "foreground"}.'
        ),
    ] = "",
    synonyms: Annotated[
        str,
        typer.Option(help='Other ROI / segment names per class as JSON, e.g. {"tumour": ["GTV"]}.'),
    ] = "{}",
    workers: Annotated[int, typer.Option(help="Parallel DICOM header reads.")] = 4,
    quiet: Quiet = False,
) -> None:
    """Find the cases in SOURCE, convert them to NIfTI, and list them.

    A case sheet is a table (tab- or comma-separated) with a header line and columns
    `image` (an image file or a DICOM series folder), `label` (NIfTI, NRRD, MetaImage,
    3D Slicer .seg.nrrd, RTSTRUCT or DICOM-SEG), and optional `patient` and `case_id`; it
    overrides the pairing medtl finds by itself. Inputs that cannot be used are listed in
    rejected.tsv with the reason and how to fix it; the rest carry on. Patient IDs are
    written only as keyed hashes; the input is never modified.
    """
    from medtl.config import load_json_arg
    from medtl.io.ingest import ingest_path
    from medtl.kernel.classes import ClassMap
    from medtl.kernel.errors import ConfigError

    names = None
    if classes.strip():
        given = load_json_arg(classes, "--classes")
        try:
            names = ClassMap.parse(given, "--classes")
        except ConfigError as exc:
            raise ConfigError(
                f"--classes: expected label values (integers) as keys, got {list(given)}. "
                'How to fix: write e.g. {"1": "tumour", "2": "oedema"}'
            ) from exc
    manifest, rejected = ingest_path(
        source,
        out,
        salt,
        modality,
        progress=not quiet,
        classes=names,
        synonyms=load_json_arg(synonyms, "--synonyms"),
        workers=workers,
    )
    typer.echo(f"ingest: {len(manifest)} cases, {len(rejected)} set aside → {out}/manifest.tsv")
    for r in rejected.itertuples():
        typer.echo(f"  set aside {r.path}: {r.reason}. Fix: {r.fix}", err=True)


@app.command()
@guard
def convert(
    dicom_dir: Annotated[
        Path, typer.Argument(help="A DICOM folder (any tree; every image series is converted).")
    ],
    out: Annotated[
        Path, typer.Option(help="Output folder: one NIfTI per series, series.tsv, rejected.tsv.")
    ],
    workers: Annotated[
        int,
        typer.Option(min=1, help="Processes converting series in parallel (one series each)."),
    ] = 2,
    salt: Annotated[str, typer.Option(help="Key for hashing patient IDs in names.")] = "medtl",
    compress: Annotated[
        bool, typer.Option("--compress/--no-compress", help="Write .nii.gz (gzip) or .nii.")
    ] = True,
    level: Annotated[
        int,
        typer.Option(
            min=1, max=9, help="gzip level, 1 (fastest, nibabel's default) to 9 (smallest)."
        ),
    ] = 1,
    quiet: Quiet = False,
) -> None:
    """Convert every DICOM image series in DICOM_DIR to NIfTI, one file per series.

    Files are named by keyed hashes of the patient and series (no patient identifiers);
    OUT/series.tsv lists them, OUT/rejected.tsv lists the files and series set aside with
    the reason and how to fix it. Series get the same checks as in `medtl ingest`
    (slice order by position, missing slices, spacing, tilt); labels (RTSTRUCT, SEG) are
    not converted: use `medtl ingest` for them.
    """
    from medtl.io.convert import ConvertOptions, convert_dicom

    options = ConvertOptions(
        salt=salt, workers=workers, compress=compress, level=level, progress=not quiet
    )
    result = convert_dicom(dicom_dir, out, options)
    typer.echo(
        f"convert: {len(result.series)} series → {out} (list in {result.series_tsv}), "
        f"{len(result.rejected)} set aside (in {result.rejected_tsv})"
    )
    for r in result.rejected:
        typer.echo(f"  set aside {r.path}: {r.reason}. Fix: {r.fix}", err=True)


@app.command("export-nnunet")
@guard
def export_nnunet(
    manifest: Annotated[Path, typer.Option(help="manifest.tsv of an ingested data set.")],
    out: Annotated[Path, typer.Option(help="nnU-Net raw folder (nnUNet_raw) to write into.")],
    dataset_id: Annotated[int, typer.Option(help="nnU-Net dataset id (1-999).")] = 500,
    name: Annotated[str, typer.Option(help="Dataset name (letters, digits, _).")] = "medtl",
    classes: Classes = '{"1": "foreground"}',
    channel_names: Annotated[
        str, typer.Option(help='Channel names as JSON, e.g. {"0": "CT"} (default: modality).')
    ] = "",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset folder.")] = False,
    folds: Annotated[
        Path | None,
        typer.Option(
            help="medtl's folds.json: also write the same folds as nnU-Net's "
            "splits_final.json into the dataset folder."
        ),
    ] = None,
) -> None:
    """Write an ingested data set in nnU-Net v2's raw format (DatasetXXX_Name/).

    So the same cases can be trained with nnU-Net: `imagesTr/<case>_0000.nii.gz` per
    channel, `labelsTr/`, unlabelled cases in `imagesTs/`, and a v2 `dataset.json`.
    With --folds, `splits_final.json` holds medtl's folds (held-out cases as nnU-Net's
    `val`); copy it into nnUNet_preprocessed/DatasetXXX_Name/ after planning, so both
    tools train and are scored on the same cases.
    """
    from medtl.config import load_json_arg
    from medtl.export.nnunet import export_nnunet as write
    from medtl.io.manifest import read_manifest
    from medtl.io.nnunet_defaults import channel_names as channels_of

    df = read_manifest(manifest)
    given = load_json_arg(channel_names, "--channel-names") if channel_names else None
    channels = channels_of(df, given)
    names = parse_classes(classes)
    folder = write(df, out, dataset_id, name, names, channels, overwrite=overwrite)
    typer.echo(f"export-nnunet: {len(df)} cases → {folder}")
    if folds is not None:
        from medtl.export.nnunet import write_nnunet_splits
        from medtl.split.folds import load_folds

        path = write_nnunet_splits(load_folds(folds), folder / "splits_final.json")
        typer.echo(f"export-nnunet: the folds of {folds} → {path}")


@app.command()
@guard
def pull(
    settings: Settings,
    cache: Annotated[Path, typer.Option(help="Local folder the studies are pulled into.")],
    quiet: Quiet = False,
) -> None:
    """Pull the studies matching a query from a DICOMweb server (PACS) into CACHE.

    Settings: {"url", "patient_id", "study_uids", "modality", "date_from", "date_to",
    "study_description", "username", "password_env"} (the config's dataset.dicomweb).
    Resumable: instances already in the cache are skipped. Writes CACHE/.medtl-pull.json.
    """
    from medtl.config import load_json_arg
    from medtl.io.dicomweb import pull as run_pull
    from medtl.io.dicomweb import query_from_config
    from medtl.io.pull_record import write_pull_record

    s = load_json_arg(settings, "--settings")
    s.pop("cache", None)
    report = run_pull(query_from_config(s), cache, progress=not quiet)
    write_pull_record(report, cache)
    typer.echo(
        f"pull: {report.studies} studies, {report.instances_downloaded} instances new, "
        f"{report.instances_skipped} already cached, {len(report.failed)} failed → {cache}"
    )
