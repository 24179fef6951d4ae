"""``medtl``: medical-image segmentation by transfer learning.

Each subcommand runs one stage of the workflow; the Snakemake rules call them, and you
can too. Heavy libraries are imported inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from medtl import __version__

app = typer.Typer(
    name="medtl",
    help=(
        "Medical-image segmentation by transfer learning.\n\n"
        "Stages: demo-data → ingest → plan → preprocess → split → pretrain → train → "
        "predict-fold → evaluate → report. The whole workflow runs with Snakemake "
        "(`make run`); `medtl predict` segments new cases with a finished run."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

Settings = Annotated[
    str,
    typer.Option(
        help="Stage settings as JSON (or @file.json); the "
        "workflow passes its validated config section."
    ),
]
Threads = Annotated[int, typer.Option(help="CPU threads for PyTorch.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))
    torch.set_flush_denormal(True)


def _fail(exc: Exception) -> None:
    typer.secho(f"medtl: error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medtl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Show the version.",
        ),
    ] = None,
) -> None:
    """Medical-image segmentation by transfer learning."""


def _guard(fn):
    """Turn medtl's user errors into a one-line message and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from medtl.kernel.errors import MedtlError

        try:
            return fn(*args, **kwargs)
        except MedtlError as exc:
            _fail(exc)

    return wrapper


@app.command("demo-data")
@_guard
def demo_data(
    out: Annotated[Path, typer.Option(help="Folder to write the demo data into.")],
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same files.")] = 7,
    n_source: Annotated[int, typer.Option(help="Labelled source volumes (pretraining).")] = 24,
    n_patients: Annotated[int, typer.Option(help="Target patients (DICOM).")] = 14,
    quiet: Quiet = False,
) -> None:
    """Generate the built-in demo: a NIfTI source set and a DICOM target set.

    Writes OUT/source (MSD-style dataset.json with NIfTI pairs) and OUT/target (DICOM
    series, NIfTI labels and cases.tsv pairing them).
    """
    from medtl.demo.generate import generate_demo

    s = generate_demo(out, seed=seed, n_source=n_source, n_patients=n_patients, progress=not quiet)
    typer.echo(
        f"demo: {s.source_cases} source volumes, {s.target_cases} target cases "
        f"from {s.target_patients} patients; case sheet {s.sheet}"
    )


Classes = Annotated[
    str, typer.Option(help='Label value → class name as JSON, e.g. {"1": "tumour"}.')
]


@app.command()
@_guard
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
    from medtl.kernel.errors import ConfigError

    names = None
    if classes.strip():
        given = load_json_arg(classes, "--classes")
        try:
            names = {int(k): str(v) for k, v in given.items()}
        except ValueError as exc:
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
@_guard
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
@_guard
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
    from medtl.io.ingest import read_manifest
    from medtl.io.nnunet import export_nnunet as write

    df = read_manifest(manifest)
    if channel_names:
        channels = {int(k): v for k, v in load_json_arg(channel_names, "--channel-names").items()}
    else:
        modality = df["modality"].iloc[0] if "modality" in df and len(df) else "unknown"
        n = int(df["channels"].iloc[0]) if "channels" in df and len(df) else 1
        channels = {c: modality if n == 1 else f"{modality}{c}" for c in range(n)}
    names = {int(k): v for k, v in load_json_arg(classes, "--classes").items()}
    folder = write(df, out, dataset_id, name, names, channels, overwrite=overwrite)
    typer.echo(f"export-nnunet: {len(df)} cases → {folder}")
    if folds is not None:
        from medtl.io.nnunet import write_nnunet_splits
        from medtl.split.folds import load_folds

        path = write_nnunet_splits(load_folds(folds), folder / "splits_final.json")
        typer.echo(f"export-nnunet: the folds of {folds} → {path}")


@app.command()
@_guard
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
    from dataclasses import asdict

    from medtl.config import load_json_arg
    from medtl.io.dicomweb import pull as run_pull
    from medtl.io.dicomweb import query_from_config
    from medtl.kernel.files import atomic_write_text

    s = load_json_arg(settings, "--settings")
    s.pop("cache", None)
    report = run_pull(query_from_config(s), cache, progress=not quiet)
    record = asdict(report)
    record["failed"] = [asdict(r) for r in report.failed]
    atomic_write_text(cache / ".medtl-pull.json", json.dumps(record, indent=2) + "\n")
    typer.echo(
        f"pull: {report.studies} studies, {report.instances_downloaded} instances new, "
        f"{report.instances_skipped} already cached, {len(report.failed)} failed → {cache}"
    )


@app.command()
@_guard
def plan(
    manifest: Annotated[Path, typer.Option(help="The ingest manifest.tsv.")],
    out: Annotated[Path, typer.Option(help="The plan.json to write.")],
    settings: Settings = "{}",
    classes: Annotated[
        str, typer.Option(help='Label names as JSON, e.g. {"1": "tumour"}.')
    ] = '{"1": "foreground"}',
) -> None:
    """Compute the preprocessing plan from the data set's fingerprint."""
    from medtl.config import PreprocessConfig, load_json_arg, parse_section
    from medtl.io.ingest import read_manifest
    from medtl.preprocess.plan import make_plan

    cfg = parse_section(PreprocessConfig, load_json_arg(settings, "--settings"), "preprocess")
    names = {int(k): v for k, v in load_json_arg(classes, "--classes").items()}
    df = read_manifest(manifest)
    p = make_plan(df, cfg, names)
    p.save(out)
    typer.echo(
        f"plan: spacing {p.target_spacing} mm, {p.normalization} normalisation, "
        f"median shape {p.median_shape} → {out}"
    )


@app.command()
@_guard
def preprocess(
    manifest: Annotated[Path, typer.Option(help="The ingest manifest.tsv.")],
    plan_path: Annotated[Path, typer.Option("--plan", help="The plan.json.")],
    out_dir: Annotated[
        Path | None,
        typer.Option(help="Folder to write the cases into, one `CASE_ID.npz` each."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Cases preprocessed at once, each in its own process with one thread; "
            "memory grows with about one case per worker.",
        ),
    ] = 2,
    case: Annotated[
        list[str] | None,
        typer.Option(help="Only this case id (repeat for several; default: every case)."),
    ] = None,
    labelled_only: Annotated[
        bool, typer.Option(help="Skip unlabelled cases (training needs only labelled ones).")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Instead of --out-dir: the .npz file of a single --case."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Reorient, crop, resample and normalise one case, or every case of the manifest in
    parallel, with the plan (cached as .npz).

    Writes `OUT_DIR/CASE_ID.npz` per case (atomically: never a partial file). A case
    whose files cannot be used does not stop the others: the rest are written, and the
    command then fails listing each bad case with its file, the reason and how to fix it.
    `--case C --out FILE` writes one case to FILE.
    """
    import time

    from medtl.io.ingest import read_manifest
    from medtl.kernel.errors import InputError
    from medtl.preprocess.plan import Plan

    if (out_dir is None) == (out is None):
        raise InputError(
            "--out-dir",
            "give exactly one of --out-dir and --out",
            "pass --out-dir DIR for every case, or --case C --out FILE for one",
        )
    df = read_manifest(manifest)
    p = Plan.load(plan_path)
    if out is not None:
        from medtl.preprocess.case import preprocess_files, save_case

        if not case or len(case) != 1:
            raise InputError(
                "--out", "--out writes one case; give exactly one --case", "use --out-dir"
            )
        rows = df[df["case_id"] == case[0]]
        if rows.empty:
            raise InputError(manifest, f"case {case[0]!r} not in the manifest", "rerun ingest")
        row = rows.iloc[0]
        label = Path(row["label"]) if row["label"] else None
        c = preprocess_files(Path(row["image"]), label, p)
        save_case(out, c)
        typer.echo(f"preprocess: {case[0]} {tuple(c.image.shape[1:])} → {out}")
        return

    from medtl.preprocess.batch import preprocess_cases

    start = time.perf_counter()
    done = preprocess_cases(
        df,
        p,
        out_dir,
        workers=workers,
        progress=not quiet,
        cases=case or None,
        labelled_only=labelled_only,
    )
    typer.echo(
        f"preprocess: {len(done)} cases in {time.perf_counter() - start:.1f} s "
        f"with {workers} workers → {out_dir}"
    )


@app.command()
@_guard
def split(
    manifest: Annotated[Path, typer.Option(help="The ingest manifest.tsv.")],
    out: Annotated[Path, typer.Option(help="The folds.json to write.")],
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Shuffling seed.")] = 0,
    val_fraction: Annotated[
        float,
        typer.Option(help="Share of training patients for validation (checkpoint selection)."),
    ] = 0.2,
) -> None:
    """Split the labelled cases into K folds grouped by patient."""
    from medtl.io.ingest import read_manifest
    from medtl.split.folds import make_folds, save_folds

    df = read_manifest(manifest)
    f = make_folds(df, folds, seed, val_fraction)
    save_folds(f, out)
    sizes = ", ".join(f"fold {x['fold']}: {len(x['test'])} held out" for x in f["folds"])
    typer.echo(f"split: {sizes} → {out}")


@app.command()
@_guard
def subset(
    folds: Annotated[Path, typer.Option(help="folds.json from the split stage.")],
    fold: Annotated[int, typer.Option(help="Fold index.")],
    fraction: Annotated[float, typer.Option(help="Share of training patients, (0, 1].")],
    out: Annotated[Path, typer.Option(help="The derived folds.json to write.")],
    seed: Annotated[int, typer.Option(help="Permutation seed.")] = 0,
) -> None:
    """Write a folds file whose fold K trains on a nested, patient-grouped share of cases.

    For label-fraction curves: the validation and held-out cases stay the same, and the
    subsets are nested (25 % of the patients are among the 50 %).
    """
    from medtl.split.subsets import write_subset_folds

    info = json.loads(write_subset_folds(folds, fold, fraction, seed, out).read_text())["subset"]
    typer.echo(
        f"subset fold {fold} at {fraction:g}: {info['train_cases']} of "
        f"{info['full_train_cases']} training cases → {out}"
    )


@app.command()
@_guard
def pretrain(
    manifest: Annotated[Path, typer.Option(help="manifest.tsv of the ingested source set.")],
    plan_path: Annotated[Path, typer.Option("--plan", help="The target's plan.json.")],
    out: Annotated[Path, typer.Option(help="Output folder (checkpoint.pt, curves.csv).")],
    settings: Settings = "{}",
    threads: Threads = 1,
    quiet: Quiet = False,
) -> None:
    """Supervised pretraining of the network on the source set → OUT/checkpoint.pt.

    Settings: {"model": {...}, "pretrain": {...}, "seed": N, "device": "auto"}.
    """
    from medtl.config import ModelConfig, PretrainConfig, load_json_arg, parse_section
    from medtl.train.run import pretrain as run_pretrain

    _threads(threads)
    s = load_json_arg(settings, "--settings")
    summary = run_pretrain(
        manifest,
        plan_path,
        out,
        parse_section(ModelConfig, s.get("model"), "model"),
        parse_section(PretrainConfig, s.get("pretrain"), "pretrain"),
        int(s.get("seed", 0)),
        str(s.get("device", "auto")),
        progress=not quiet,
    )
    from medtl.train.distributed import is_main

    if is_main():  # one summary line, not one per DDP process
        typer.echo(
            f"pretrain: best validation Dice {summary['best_val_dice']:.3f} at step "
            f"{summary['best_step']} → {out}/checkpoint.pt"
        )


@app.command("pretrain-ssl")
@_guard
def pretrain_ssl(
    manifest: Annotated[
        list[Path],
        typer.Option(help="manifest.tsv of each ingested data set to learn from (repeatable)."),
    ],
    plan_path: Annotated[Path, typer.Option("--plan", help="The target's plan.json.")],
    out: Annotated[Path, typer.Option(help="Output folder (checkpoint.pt, curves.csv).")],
    settings: Settings = "{}",
    threads: Threads = 1,
    quiet: Quiet = False,
) -> None:
    """Self-supervised pretraining on all images, labelled or not → OUT/checkpoint.pt.

    Masked-volume inpainting plus rotation prediction. Settings: {"model": {...},
    "pretrain_ssl": {...}, "seed": N, "device": "auto"}.
    """
    from medtl.config import ModelConfig, load_json_arg, parse_section
    from medtl.train.ssl import SSLConfig, pretrain_ssl_from_manifests

    _threads(threads)
    s = load_json_arg(settings, "--settings")
    ssl = dict(s.get("pretrain_ssl") or {})
    ssl.pop("use_source", None)
    summary = pretrain_ssl_from_manifests(
        list(manifest),
        plan_path,
        out,
        parse_section(ModelConfig, s.get("model"), "model"),
        parse_section(SSLConfig, ssl, "pretrain_ssl"),
        int(s.get("seed", 0)),
        str(s.get("device", "auto")),
        progress=not quiet,
    )
    from medtl.train.distributed import is_main

    if is_main():  # one summary line, not one per DDP process
        typer.echo(
            f"pretrain-ssl: {summary['images']} images, inpainting loss "
            f"{summary['first_inpaint_loss']:.3f} → {summary['final_inpaint_loss']:.3f} "
            f"→ {out}/checkpoint.pt"
        )


@app.command("describe-model")
@_guard
def describe_model(
    config: Annotated[
        Path, typer.Option(help="Workflow config (YAML) naming the model and the arms.")
    ] = Path("config/config.yaml"),
    in_channels: Annotated[int, typer.Option(help="Input channels.")] = 1,
    pretrained: Annotated[
        Path | None,
        typer.Option(
            help="A weights file or MONAI bundle folder: show which stages training would "
            "load from it (no code runs)."
        ),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="The weights' format (auto, medtl, state_dict, safetensors, swinunetr_ssl, "
            "medicalnet, monai_bundle, nnunet); default: the config's pretrain.format.",
        ),
    ] = None,
) -> None:
    """Print the network as a table: stages, parameters, pretrained, frozen per arm.

    The "understand the architecture" step before choosing a transfer strategy: one row
    per encoder stage, the decoder and the head, with parameter counts, whether the
    pretrained weights cover each stage, and whether each arm trains it. With
    --pretrained, the weights are read and matched exactly as training does (the
    format's renaming, shapes, first-layer adaptation), the load summary is printed, and
    a checkpoint training would refuse stops with its reason (exit code 1).
    """
    import yaml

    from medtl.config import ArmConfig, ModelConfig, parse_section, validate_config
    from medtl.models.describe import describe_model as describe
    from medtl.models.describe import format_table

    cfg = yaml.safe_load(Path(config).read_text()) or {}
    schema = Path(__file__).resolve().parents[2] / "pipeline" / "schemas" / "config.schema.yaml"
    if schema.is_file():
        validate_config(cfg, schema)
    model = parse_section(ModelConfig, cfg.get("model"), "model")
    arms = {n: parse_section(ArmConfig, a, f"arms.{n}") for n, a in cfg.get("arms", {}).items()}
    num_classes = 1 + max(int(k) for k in cfg.get("classes", {"1": "x"}))
    report, keys, network = None, None, None
    pre = cfg.get("pretrain") or {}
    if pretrained is not None:
        from medtl.models.networks import build_network
        from medtl.models.transfer import plan_checkpoint

        fmt = format or str(pre.get("format") or "auto")
        network = build_network(model, in_channels, num_classes)
        # the same reading and matching as training: only encoder tensors are transferred
        report = plan_checkpoint(pretrained, fmt, model, in_channels, num_classes, network=network)
        keys = set(report.loaded)
    table = describe(model, in_channels, num_classes, arms, pretrained_keys=keys, network=network)
    typer.echo(format_table(table))
    if report is not None:
        from medtl.models import transfer

        typer.echo(f"pretrained: {report.summary()}")
        for note in report.notes:
            typer.echo(f"  note: {note}")
        transfer.refuse_mismatch(
            report,
            float(pre.get("min_loaded_fraction", transfer.MIN_LOADED_FRACTION)),
            float(pre.get("max_unused_fraction", transfer.MAX_UNUSED_FRACTION)),
        )
        typer.echo("pretrained: training would accept these weights")


@app.command()
@_guard
def train(
    arm: Annotated[str, typer.Option(help="Arm (transfer strategy) name.")],
    fold: Annotated[int, typer.Option(help="Fold index.")],
    folds: Annotated[Path, typer.Option(help="folds.json from the split stage.")],
    cases: Annotated[Path, typer.Option(help="Folder of preprocessed .npz cases.")],
    out: Annotated[Path, typer.Option(help="Run folder (best.pt, curves.csv, run.json).")],
    settings: Settings,
    pretrained: Annotated[
        Path | None,
        typer.Option(help="Pretrained weights, for arms with init: pretrained."),
    ] = None,
    threads: Threads = 1,
    quiet: Quiet = False,
) -> None:
    """Train one transfer arm on one fold.

    Settings: {"model", "train", "arm", "predict", "seed", "device", "classes",
    "min_loaded_fraction"}. An interrupted run resumes from OUT/last.pt.
    """
    from medtl.config import load_json_arg
    from medtl.train.run import TrainingJob, train_arm

    _threads(threads)
    s = TrainingJob.from_dict(load_json_arg(settings, "--settings"), arm)
    summary = train_arm(s, arm, fold, folds, cases, out, pretrained, progress=not quiet)
    from medtl.train.distributed import is_main

    if is_main():  # one summary line, not one per DDP process
        typer.echo(
            f"train {arm} fold {fold}: best validation Dice {summary['best_val_dice']:.3f} "
            f"at step {summary['best_step']} ({summary['seconds']:.0f} s)"
        )


@app.command("predict-fold")
@_guard
def predict_fold(
    run: Annotated[Path, typer.Option(help="The fold's run folder (holds best.pt).")],
    folds: Annotated[Path, typer.Option(help="folds.json.")],
    fold: Annotated[int, typer.Option(help="Fold index.")],
    cases: Annotated[Path, typer.Option(help="Folder of preprocessed .npz cases.")],
    out: Annotated[Path, typer.Option(help="Folder for the masks.")],
    settings: Settings = "{}",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Threads = 1,
    quiet: Quiet = False,
) -> None:
    """Segment a fold's held-out cases; masks in the original image space."""
    from medtl.config import PredictConfig, load_json_arg, parse_section
    from medtl.predict.run import predict_fold as predict_fold_cases

    _threads(threads)
    cfg = parse_section(PredictConfig, load_json_arg(settings, "--settings"), "predict")
    written = predict_fold_cases(
        run_dir=run,
        folds_path=folds,
        fold=fold,
        cases_dir=cases,
        out=out,
        cfg=cfg,
        device_name=device,
        progress=not quiet,
    )
    typer.echo(f"predict fold {fold}: {len(written)} masks → {out}")


@app.command()
@_guard
def predict(
    input: Annotated[
        Path,
        typer.Argument(help="New cases: a DICOM folder, a NIfTI file or folder, or a case sheet."),
    ],
    model: Annotated[Path, typer.Option(help="A finished run's results folder.")],
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
    from medtl.config import PredictConfig
    from medtl.predict.run import predict_new

    _threads(threads)
    table = predict_new(
        input,
        model,
        out,
        arm,
        PredictConfig(overlap=overlap, tta=tta),
        device,
        progress=not quiet,
        formats=tuple(f.strip() for f in format.split(",") if f.strip()),
        seeds=_seed_list(seeds),
    )
    models = f", {table['models'].iloc[0]} models averaged" if len(table) else ""
    typer.echo(f"predict: {len(table)} cases → {out} (list in {out}/predictions.tsv{models})")


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
@_guard
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


@app.command()
@_guard
def evaluate(
    manifest: Annotated[Path, typer.Option(help="The ingest manifest.tsv (references).")],
    folds: Annotated[Path, typer.Option(help="folds.json.")],
    predictions: Annotated[
        Path, typer.Option(help="Folder `predictions/` (holding `<arm>/seed<s>/fold<k>/`).")
    ],
    arms: Annotated[str, typer.Option(help="Comma-separated arm names.")],
    out: Annotated[Path, typer.Option(help="The metrics CSV to write.")],
    fold: Annotated[
        int | None, typer.Option(help="Only this fold's held-out cases (default: every fold).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="The training runs' seed (`<arm>/seed<s>/fold<k>/`); leave out for a run "
            "of an earlier version (`<arm>/fold<k>/`)."
        ),
    ] = None,
    classes: Classes = '{"1": "foreground"}',
    settings: Settings = "{}",
    threads: Threads = 1,
) -> None:
    """Metrics per case and class from the written masks.

    Dice, IoU, HD95 and ASSD (mm), normalised surface Dice at the configured tolerance,
    volume error (ml and relative) and lesion-wise detection (TP/FP/FN of connected
    components). Settings: the config's `evaluate` section as JSON.

    Example: `medtl evaluate --manifest results/ingest/manifest.tsv --folds
    results/splits/folds.json --predictions results/predictions --arms finetune --seed 1
    --fold 0 --out finetune_seed1_fold0.csv`
    """
    from medtl.config import EvaluateConfig, load_json_arg, parse_section
    from medtl.evaluate.metrics import evaluate_predictions

    names = {int(k): v for k, v in load_json_arg(classes, "--classes").items()}
    cfg = parse_section(EvaluateConfig, load_json_arg(settings, "--settings"), "evaluate")
    df = evaluate_predictions(
        manifest,
        folds,
        predictions,
        arms.split(","),
        names,
        out,
        threads=threads,
        cfg=cfg,
        fold=fold,
        seed=seed,
    )
    typer.echo(f"evaluate: {len(df)} rows → {out}")


@app.command("evaluate-merge")
@_guard
def evaluate_merge(
    tables: Annotated[list[Path], typer.Argument(help="Metrics CSVs of single arms and folds.")],
    out: Annotated[Path, typer.Option(help="metrics.csv to write.")],
) -> None:
    """Join the per-arm, per-fold metrics tables into one metrics.csv."""
    from medtl.evaluate.metrics import combine_metrics

    df = combine_metrics(list(tables), out)
    typer.echo(f"evaluate-merge: {len(tables)} tables, {len(df)} rows → {out}")


@app.command()
@_guard
def postprocess(
    manifest: Annotated[Path, typer.Option(help="The ingest manifest.tsv (references).")],
    folds: Annotated[Path, typer.Option(help="folds.json.")],
    predictions: Annotated[
        Path, typer.Option(help="Folder `predictions/` (holding `<arm>/seed<s>/fold<k>/`).")
    ],
    arm: Annotated[str, typer.Option(help="The arm whose cross-validation masks to use.")],
    out: Annotated[Path, typer.Option(help="The decision (JSON) to write.")],
    seeds: Annotated[
        str | None,
        typer.Option(
            help="The arm's training seeds, comma-separated (every seed's masks are scored); "
            "leave out for a run of an earlier version (`<arm>/fold<k>/`)."
        ),
    ] = None,
    classes: Classes = '{"1": "foreground"}',
    settings: Settings = "{}",
    threads: Threads = 1,
) -> None:
    """Choose post-processing per class on an arm's cross-validation predictions.

    Tries keeping the largest connected component and removing small components; a
    candidate is chosen only when it raises the class's mean CV Dice. `medtl predict`
    applies the decision. Settings: the config's `postprocess` section as JSON.
    """
    from medtl.config import PostprocessConfig, load_json_arg, parse_section
    from medtl.postprocess.choose import choose_postprocessing

    names = {int(k): v for k, v in load_json_arg(classes, "--classes").items()}
    cfg = parse_section(PostprocessConfig, load_json_arg(settings, "--settings"), "postprocess")
    decision = choose_postprocessing(
        manifest,
        folds,
        predictions,
        arm,
        names,
        cfg,
        out,
        threads=threads,
        seeds=[int(s) for s in seeds.split(",")] if seeds else None,
    )
    chosen = ", ".join(f"{c}: {d['chosen']}" for c, d in decision["classes"].items())
    typer.echo(f"postprocess {arm}: {chosen} → {out}")


@app.command()
@_guard
def power(
    results: Annotated[
        Path | None,
        typer.Option(
            help="A finished run's results folder: its metrics give the sizes of the patient, "
            "case and run variation (needs an arm with 2 or more seeds), its folds the "
            "patients and folds. Default: the demo's sizes (docs/statistics.md)."
        ),
    ] = None,
    seeds: Annotated[str, typer.Option(help="Seeds per arm to try, comma-separated.")] = "1,3,5",
    difference: Annotated[
        str, typer.Option(help="True differences in mean Dice to detect, comma-separated.")
    ] = "0.05",
    patients: Annotated[
        int | None, typer.Option(help="Patients in the study (default: the run's, or 14).")
    ] = None,
    folds: Annotated[
        int | None, typer.Option(help="Cross-validation folds (default: the run's, or 3).")
    ] = None,
    studies: Annotated[int, typer.Option(help="Simulated studies per setting.")] = 500,
) -> None:
    """How many seeds a comparison of two arms needs: simulated false positives and power.

    Simulates studies of two arms with the sizes of patient, case and training-run
    variation of the demo or of a finished run (`--results`), and tests them as the report
    does: with one seed the patient-only test (which treats the trained models as fixed),
    with two or more the test that counts patients and runs as random. Prints, per number
    of seeds and true difference, the rate of false "better" claims when the arms are
    equal, and the power to detect the difference. Writes nothing.

    Example: `medtl power --results results --seeds 3,5,10 --difference 0.05,0.1`
    """
    import json as json_

    from medtl.evaluate.metrics import read_metrics
    from medtl.evaluate.power import DEMO, DEMO_FOLDS, DEMO_PATIENTS, estimate_components
    from medtl.evaluate.power import power_table as simulate

    try:
        seed_counts = [int(s) for s in seeds.split(",") if s.strip()]
        differences = [float(d) for d in difference.split(",") if d.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated numbers, got --seeds {seeds!r} --difference {difference!r}"
        ) from None
    components, source = DEMO, "the demo's sizes"
    n_patients, n_folds = DEMO_PATIENTS, DEMO_FOLDS
    if results is not None:
        from medtl.evaluate.stats import seeds_of

        metrics = read_metrics(results / "evaluation" / "metrics.csv")
        split = json_.loads((results / "splits" / "folds.json").read_text())
        groups = split.get("groups") or None
        if seeds_of(metrics).groupby(metrics["arm"]).nunique().max() < 2:
            raise typer.BadParameter(
                f"{results}: every arm was trained with one seed, so the run-to-run variation "
                "cannot be measured. Train with 2 or more seeds (config key seeds), or leave "
                "--results out to use the demo's sizes.",
                param_hint="--results",
            )
        components = estimate_components(metrics, groups=groups)
        source = f"the sizes measured in {results}"
        n_patients = len(set(groups.values())) if groups else metrics["case"].nunique()
        n_folds = len(split["folds"])
    n_patients, n_folds = patients or n_patients, folds or n_folds
    table = simulate(
        components,
        seeds=seed_counts,
        differences=differences,
        n_patients=n_patients,
        n_folds=n_folds,
        n_studies=studies,
    )
    c = components
    typer.echo(
        f"power: {studies} simulated studies per row, {n_patients} patients, {n_folds} folds; "
        f"{source}: run SD {c.run_sd:.3f}, patient SD {c.patient_sd:.3f}, case SD "
        f"{c.case_sd:.3f}, residual SD {c.residual_sd:.3f}, α = 0.05"
    )
    header = (
        "seeds  difference  false positives (test used)  false positives (patients only)  power"
    )
    typer.echo(header)
    for r in table.itertuples():
        fp = r.false_positive_rate_runs if r.seeds > 1 else r.false_positive_rate_patients_only
        typer.echo(
            f"{r.seeds:>5}  {r.difference:>10.3f}  {fp:>27.1%}  "
            f"{r.false_positive_rate_patients_only:>31.1%}  {r.power:>5.2f}"
        )
    if 1 in seed_counts:
        typer.echo(
            "With 1 seed the test treats the trained models as fixed: it claims differences "
            "that are not there far more often than 5 %, so its power means little."
        )


@app.command("evaluate-fractions")
@_guard
def evaluate_fractions(
    manifest: Annotated[Path, typer.Option(help="The ingest manifest.tsv (references).")],
    folds: Annotated[Path, typer.Option(help="folds.json.")],
    fractions_root: Annotated[Path, typer.Option(help="Folder results/fractions.")],
    fractions: Annotated[str, typer.Option(help="Comma-separated shares, e.g. 0.25,0.5.")],
    arms: Annotated[str, typer.Option(help="Comma-separated arm names.")],
    out: Annotated[Path, typer.Option(help="label_fraction.csv to write.")],
    full_metrics: Annotated[
        Path | None, typer.Option(help="metrics.csv of the full-data arms (the 100 % point).")
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Each arm's training seeds as JSON, e.g. '{\"scratch\": [1, 2]}'; leave "
            "out for a run of an earlier version (`<arm>/fold<k>/`)."
        ),
    ] = None,
    classes: Classes = '{"1": "foreground"}',
    threads: Threads = 1,
) -> None:
    """Dice and HD95 of every arm at every label fraction → label_fraction.csv."""
    from medtl.config import load_json_arg
    from medtl.split.subsets import evaluate_fractions as run

    names = {int(k): v for k, v in load_json_arg(classes, "--classes").items()}
    shares = [float(f) for f in fractions.split(",") if f.strip()]
    df = run(
        manifest,
        folds,
        fractions_root,
        shares,
        arms.split(","),
        names,
        out,
        full_metrics=full_metrics,
        threads=threads,
        seeds=(
            {a: [int(s) for s in v] for a, v in load_json_arg(seeds, "--seeds").items()}
            if seeds
            else None
        ),
    )
    typer.echo(f"evaluate-fractions: {len(df)} rows → {out}")


@app.command()
@_guard
def report(
    results: Annotated[Path, typer.Option(help="The results folder.")],
    out: Annotated[Path, typer.Option(help="report.html to write.")],
    figures: Annotated[Path, typer.Option(help="Folder for the report's figures (PNG).")],
    summary: Annotated[Path, typer.Option(help="summary.json to write.")],
    settings: Settings,
) -> None:
    """Build the self-contained HTML report (and summary.json) from the results.

    Settings: the whole resolved workflow config (for arms, classes and provenance).
    """
    import yaml

    from medtl.config import load_json_arg
    from medtl.kernel.files import atomic_write_text
    from medtl.provenance import git_commit, hardware, package_versions, redact_secrets
    from medtl.report.build import build_report

    cfg = redact_secrets(load_json_arg(settings, "--settings"))
    arms = list(cfg.get("arms", {}))
    classes = {int(k): v for k, v in cfg.get("classes", {"1": "foreground"}).items()}
    rep = cfg.get("report", {})
    build_report(
        results,
        out,
        figures,
        summary,
        arms=arms,
        reference_arm=rep.get("reference_arm", "scratch"),
        classes=classes,
        config=cfg,
        n_overlays=int(rep.get("overlays", 3)),
    )
    atomic_write_text(out.parent / "config.resolved.yaml", yaml.safe_dump(cfg, sort_keys=False))
    atomic_write_text(
        out.parent / "versions.json",
        json.dumps(
            {"versions": package_versions(), "git_commit": git_commit(), "hardware": hardware()},
            indent=2,
        )
        + "\n",
    )
    typer.echo(f"report: {out}")


@app.command("check-device")
def check_device(
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    gpus: Annotated[int, typer.Option(help="GPUs the config asks for.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Write what was found here (JSON), for provenance.")
    ] = None,
) -> None:
    """Say at the start whether the requested device exists (not after an hour).

    The workflow runs this first, on the kind of node its GPU jobs get: a config that
    asks for CUDA (`device: cuda` or `gpus` > 0) on a machine where PyTorch sees none
    fails here, before any data is processed.
    """
    import torch

    from medtl.kernel.files import atomic_write_text
    from medtl.provenance import hardware

    asked = f"device {device}" if device != "auto" else f"{gpus} GPU(s)"
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (device.startswith("cuda") or gpus > 0) and found == 0:
        _fail(
            RuntimeError(
                f"the config asks for {asked} "
                "but PyTorch sees no CUDA device. How to fix: set device: auto and gpus: 0 to run "
                "on CPU, or run on a GPU node with a CUDA build of PyTorch"
            )
        )
    if gpus > found > 0:
        _fail(
            RuntimeError(
                f"the config asks for {gpus} GPUs per job but this node has {found}. How to "
                f"fix: set gpus: {found} or fewer, or ask the scheduler for a larger node"
            )
        )
    name = torch.cuda.get_device_name(0) if found else "CPU"
    if out is not None:
        record = {
            "device": device,
            "gpus_asked": gpus,
            "gpus_found": found,
            "name": name,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            **hardware(),
        }
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    typer.echo(f"device: {name}" + (f" ({found} GPU(s))" if found else ""))


def run() -> None:  # pragma: no cover
    sys.exit(app())
