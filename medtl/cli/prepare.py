"""Commands that prepare the cases for training: plan, preprocess, split, subset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from medtl.cli.common import Quiet, Settings, app, guard, parse_classes


@app.command()
@guard
def plan(
    manifest: Annotated[Path, typer.Option(help="The ingest manifest.tsv.")],
    out: Annotated[Path, typer.Option(help="The plan.json to write.")],
    settings: Settings = "{}",
    classes: Annotated[
        str, typer.Option(help='Label names as JSON, e.g. {"1": "tumour"}.')
    ] = '{"1": "foreground"}',
    pretrained: Annotated[
        Path | None,
        typer.Option(
            help="The pretrained checkpoint (pretrain.checkpoint) whose spacing and "
            "normalisation `like_pretrained` takes."
        ),
    ] = None,
    pretrained_format: Annotated[
        str, typer.Option(help="Its format (pretrain.format); auto detects it.")
    ] = "auto",
) -> None:
    """Compute the preprocessing plan from the data set's fingerprint.

    With `like_pretrained` in the settings (target_spacing or normalization), the plan
    takes that value from the --pretrained checkpoint's plans instead, and warns when the
    data's voxels are over 2x finer than the pretraining's.
    """
    from medtl.config import PreprocessConfig, load_json_arg, parse_section
    from medtl.io.manifest import read_manifest
    from medtl.preprocess.plan import make_plan

    cfg = parse_section(PreprocessConfig, load_json_arg(settings, "--settings"), "preprocess")
    grid = None
    if cfg.like_pretrained and pretrained is not None:
        from medtl.models.pretraining import read_pretraining

        grid = read_pretraining(pretrained, pretrained_format)
    names = parse_classes(classes)
    df = read_manifest(manifest)
    p = make_plan(df, cfg, names, pretrained=grid)
    p.save(out)
    typer.echo(
        f"plan: spacing {p.target_spacing} mm ({p.spacing_source}), {p.normalization} "
        f"normalisation ({p.normalization_source}), median shape {p.median_shape} → {out}"
    )
    for warning in p.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command()
@guard
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

    from medtl.io.manifest import read_manifest
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
        from medtl.preprocess.single import preprocess_manifest_case

        if not case or len(case) != 1:
            raise InputError(
                "--out", "--out writes one case; give exactly one --case", "use --out-dir"
            )
        c = preprocess_manifest_case(df, case[0], p, out, manifest)
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
@guard
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
    from medtl.io.manifest import read_manifest
    from medtl.split.folds import make_folds, save_folds

    df = read_manifest(manifest)
    f = make_folds(df, folds, seed, val_fraction)
    save_folds(f, out)
    sizes = ", ".join(f"fold {x['fold']}: {len(x['test'])} held out" for x in f["folds"])
    typer.echo(f"split: {sizes} → {out}")


@app.command()
@guard
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
