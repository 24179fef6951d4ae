"""Commands that score: metrics, post-processing choice, power, label-fraction curves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtl.cli.common import (
    Classes,
    FoldsJson,
    Predictions,
    References,
    Settings,
    Threads,
    app,
    guard,
    parse_classes,
)


@app.command()
@guard
def evaluate(
    manifest: References,
    folds: FoldsJson,
    predictions: Predictions,
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
    from medtl.evaluate.metrics import evaluate_predictions, write_metrics

    names = parse_classes(classes)
    cfg = parse_section(EvaluateConfig, load_json_arg(settings, "--settings"), "evaluate")
    df = evaluate_predictions(
        manifest,
        folds,
        predictions,
        arms.split(","),
        names,
        threads=threads,
        cfg=cfg,
        fold=fold,
        seed=seed,
    )
    write_metrics(df, out)
    typer.echo(f"evaluate: {len(df)} rows → {out}")


@app.command("evaluate-merge")
@guard
def evaluate_merge(
    tables: Annotated[list[Path], typer.Argument(help="Metrics CSVs of single arms and folds.")],
    out: Annotated[Path, typer.Option(help="metrics.csv to write.")],
) -> None:
    """Join the per-arm, per-fold metrics tables into one metrics.csv."""
    from medtl.evaluate.metrics import combine_metrics

    df = combine_metrics(list(tables), out)
    typer.echo(f"evaluate-merge: {len(tables)} tables, {len(df)} rows → {out}")


@app.command()
@guard
def postprocess(
    manifest: References,
    folds: FoldsJson,
    predictions: Predictions,
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

    names = parse_classes(classes)
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
@guard
def trust(
    results: Annotated[
        Path,
        typer.Option(
            help="The run's results folder: the arm's training runs, their held-out "
            "predictions (with cases.tsv and calibration.npz) and their evaluation."
        ),
    ],
    arm: Annotated[str, typer.Option(help="The arm to fit.")],
    out: Annotated[Path, typer.Option(help="The fit (JSON) to write.")],
    seeds: Annotated[
        str | None,
        typer.Option(help="The arm's training seeds, comma-separated (default: every run)."),
    ] = None,
    settings: Settings = "{}",
) -> None:
    """Calibrate an arm and choose its failure flag, on its cross-validation predictions.

    Fits the temperature that calibrates the arm's probabilities (held-out voxels near
    the structure; the error after is cross-fitted over folds), measures how well each
    per-case uncertainty score predicts a Dice below trust.bad_dice (Spearman, AURC against
    oracle and random), and picks the best score and its flag threshold. `medtl predict`
    applies both. Settings: the config's `trust` section as JSON. See docs/predict.md.
    """
    from medtl.config import TrustConfig, load_json_arg, parse_section
    from medtl.trust.cv import fit_trust

    cfg = parse_section(TrustConfig, load_json_arg(settings, "--settings"), "trust")
    record = fit_trust(
        results, arm, cfg, out, seeds=[int(s) for s in seeds.split(",")] if seeds else None
    )
    cal, rule = record["calibration"], record["rule"]
    flagged = sum(bool(c["flag"]) for c in record["cases"])
    typer.echo(
        f"trust {arm}: temperature {cal['temperature']:.3f}, ECE "
        f"{cal['before']['ece']:.4f} → {cal['after']['ece']:.4f}; flag on "
        f"{rule['measure']} ({flagged} of {len(record['cases'])} CV predictions) → {out}"
    )


@app.command()
@guard
def shift(
    target: Annotated[Path, typer.Option(help="The target's ingest manifest.tsv.")],
    plan: Annotated[
        Path, typer.Option(help="The target's plan.json: both sets are preprocessed with it.")
    ],
    out: Annotated[Path, typer.Option(help="Folder to write shift.json and per_case.tsv into.")],
    source: Annotated[
        Path | None,
        typer.Option(
            help="The source's ingest manifest.tsv (the pretraining source); leave out when "
            "there are no source images: only the metadata is compared."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="The pretrained weights whose encoder looks at both sets."),
    ] = None,
    weights_format: Annotated[
        str, typer.Option("--format", help="The checkpoint's format (pretrain.format).")
    ] = "auto",
    pretrained_with_plan: Annotated[
        bool,
        typer.Option(
            help="The checkpoint was pretrained with this plan (medtl's own pretraining)."
        ),
    ] = False,
    source_name: Annotated[
        str, typer.Option(help="What the source set is, for the record.")
    ] = "supervised pretraining source",
    model: Annotated[str, typer.Option(help="The config's model section as JSON.")] = "{}",
    patch: Annotated[
        str, typer.Option(help="Patch in voxels, e.g. 32,32,16 (default: train.patch_size).")
    ] = "",
    arms: Annotated[
        str,
        typer.Option(
            help="The arms that start from --checkpoint, comma-separated: the report sets "
            "their gains against the per-case distances."
        ),
    ] = "",
    settings: Settings = "{}",
    threads: Threads = 1,
) -> None:
    """Measure the domain shift between the pretraining source and the target, before training.

    Compares acquisition (spacing, orientation, modality), intensities after the
    normalisation each set gets, the labelled structures' volume and position, and the
    pretrained encoder's own view: pooled features on patches of each case, their MMD with
    a permutation p-value, and each target case's distance to the source. Warnings name
    the fix. Settings: the config's `shift` section as JSON. See docs/domain-shift.md.

    Example: `medtl shift --target results/ingest/manifest.tsv --source
    results/pretrain/source/manifest.tsv --plan results/preprocess/plan.json --checkpoint
    results/pretrain/checkpoint.pt --pretrained-with-plan --out results/shift`
    """
    from medtl.cli.common import set_threads
    from medtl.config import ModelConfig, ShiftConfig, TrainConfig, load_json_arg, parse_section
    from medtl.shift.measure import run_shift

    set_threads(threads)
    cfg = parse_section(ShiftConfig, load_json_arg(settings, "--settings"), "shift")
    model_cfg = parse_section(ModelConfig, load_json_arg(model, "--model"), "model")
    size = tuple(int(p) for p in patch.split(",")) if patch else None
    size = size or cfg.patch_size or TrainConfig().patch_size
    record = run_shift(
        target,
        plan,
        out,
        cfg,
        model_cfg,
        size,
        source,
        checkpoint,
        weights_format,
        pretrained_with_plan,
        source_name,
        [a.strip() for a in arms.split(",") if a.strip()],
    )
    view = record.encoder
    said = (
        f"feature MMD² {view['mmd2']:.4f}, p {view['p_value']:.3g}, "
        f"{view['flagged_cases']} case(s) flagged"
        if view
        else "; ".join(record.notes[-1:])
    )
    typer.echo(f"shift: {said}; {len(record.warnings)} warning(s) → {out}")
    for warning in record.warnings:
        typer.echo(f"  warning: {warning}")


@app.command()
@guard
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
    from medtl.evaluate.power import DEMO, DEMO_FOLDS, DEMO_PATIENTS
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
        components, n_patients, n_folds = _measured_sizes(results)
        source = f"the sizes measured in {results}"
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
    _echo_power_table(table, one_seed=1 in seed_counts)


def _measured_sizes(results: Path):
    """The variance components, patients and folds of a finished run's results folder."""
    from medtl.evaluate.cases import seeds_of
    from medtl.evaluate.estimation import estimate_components
    from medtl.evaluate.metrics import read_metrics
    from medtl.split.folds import load_folds

    metrics = read_metrics(results / "evaluation" / "metrics.csv")
    split = load_folds(results / "splits" / "folds.json")
    groups = split.get("groups") or None
    if seeds_of(metrics).groupby(metrics["arm"]).nunique().max() < 2:
        raise typer.BadParameter(
            f"{results}: every arm was trained with one seed, so the run-to-run variation "
            "cannot be measured. Train with 2 or more seeds (config key seeds), or leave "
            "--results out to use the demo's sizes.",
            param_hint="--results",
        )
    components = estimate_components(metrics, groups=groups)
    n_patients = len(set(groups.values())) if groups else metrics["case"].nunique()
    return components, n_patients, len(split["folds"])


def _echo_power_table(table, one_seed: bool) -> None:
    """Print the simulated rates, one row per number of seeds and difference."""
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
    if one_seed:
        typer.echo(
            "With 1 seed the test treats the trained models as fixed: it claims differences "
            "that are not there far more often than 5 %, so its power means little."
        )


@app.command("evaluate-fractions")
@guard
def evaluate_fractions(
    manifest: References,
    folds: FoldsJson,
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
    from medtl.evaluate.fractions import evaluate_fractions as run

    names = parse_classes(classes)
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
