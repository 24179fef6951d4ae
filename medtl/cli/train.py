"""Commands that train: supervised and self-supervised pretraining, the arms, the model table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtl.cli.common import (
    PretrainOut,
    Quiet,
    Settings,
    TargetPlan,
    Threads,
    app,
    guard,
    set_threads,
    settings_device,
    settings_seed,
)


@app.command()
@guard
def pretrain(
    manifest: Annotated[Path, typer.Option(help="manifest.tsv of the ingested source set.")],
    plan_path: TargetPlan,
    out: PretrainOut,
    settings: Settings = "{}",
    threads: Threads = 1,
    quiet: Quiet = False,
) -> None:
    """Supervised pretraining of the network on the source set → OUT/checkpoint.pt.

    Settings: {"model": {...}, "pretrain": {...}, "seed": N, "device": "auto"}.
    """
    from medtl.config import ModelConfig, PretrainConfig, load_json_arg, parse_section
    from medtl.train.run import pretrain as run_pretrain

    set_threads(threads)
    s = load_json_arg(settings, "--settings")
    summary = run_pretrain(
        manifest,
        plan_path,
        out,
        parse_section(ModelConfig, s.get("model"), "model"),
        parse_section(PretrainConfig, s.get("pretrain"), "pretrain"),
        settings_seed(s),
        settings_device(s),
        progress=not quiet,
    )
    from medtl.train.distributed import is_main

    if is_main():  # one summary line, not one per DDP process
        typer.echo(
            f"pretrain: best validation Dice {summary['best_val_dice']:.3f} at step "
            f"{summary['best_step']} → {out}/checkpoint.pt"
        )


@app.command("pretrain-ssl")
@guard
def pretrain_ssl(
    manifest: Annotated[
        list[Path],
        typer.Option(help="manifest.tsv of each ingested data set to learn from (repeatable)."),
    ],
    plan_path: TargetPlan,
    out: PretrainOut,
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

    set_threads(threads)
    s = load_json_arg(settings, "--settings")
    ssl = dict(s.get("pretrain_ssl") or {})
    ssl.pop("use_source", None)
    summary = pretrain_ssl_from_manifests(
        list(manifest),
        plan_path,
        out,
        parse_section(ModelConfig, s.get("model"), "model"),
        parse_section(SSLConfig, ssl, "pretrain_ssl"),
        settings_seed(s),
        settings_device(s),
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
@guard
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
            "medicalnet, monai_bundle, nnunet, nnssl); default: the config's pretrain.format.",
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

    from medtl.config import (
        DEFAULT_CLASSES,
        SCHEMA_PATH,
        ArmConfig,
        ModelConfig,
        PretrainConfig,
        TrainConfig,
        parse_section,
        validate_config,
    )
    from medtl.kernel.classes import ClassMap
    from medtl.models.describe import describe_model as describe
    from medtl.models.describe import format_table

    cfg = yaml.safe_load(Path(config).read_text()) or {}
    if SCHEMA_PATH.is_file():  # a source checkout: the defaults of the workflow
        validate_config(cfg, SCHEMA_PATH)
    model = parse_section(ModelConfig, cfg.get("model"), "model")
    patch = parse_section(TrainConfig, cfg.get("train"), "train").patch_size
    arms = {n: parse_section(ArmConfig, a, f"arms.{n}") for n, a in cfg.get("arms", {}).items()}
    num_classes = ClassMap.parse(cfg.get("classes", DEFAULT_CLASSES), "classes").num_classes
    report, keys, network = None, None, None
    pre = parse_section(PretrainConfig, cfg.get("pretrain"), "pretrain")
    if pretrained is not None:
        from medtl.models.networks import build_network
        from medtl.models.transfer import plan_checkpoint

        fmt = format or pre.format
        network = build_network(model, in_channels, num_classes, patch)
        # the same reading and matching as training: only encoder tensors are transferred
        report = plan_checkpoint(pretrained, fmt, model, in_channels, num_classes, network=network)
        keys = set(report.loaded)
    table = describe(
        model,
        in_channels,
        num_classes,
        arms,
        pretrained_keys=keys,
        network=network,
        patch_size=patch,
    )
    typer.echo(format_table(table))
    if report is not None:
        _print_load(report, pre)


def _print_load(report, pre) -> None:
    """The load summary, its notes and adaptations, then training's verdict on the weights."""
    from medtl.models import transfer

    typer.echo(f"pretrained: {report.summary()}")
    for note in report.notes:
        typer.echo(f"  note: {note}")
    for line in report.adaptations:
        typer.echo(f"  adapted: {line}")
    transfer.refuse_mismatch(report, pre.min_loaded_fraction, pre.max_unused_fraction)
    typer.echo("pretrained: training would accept these weights")


@app.command()
@guard
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

    set_threads(threads)
    s = TrainingJob.from_dict(load_json_arg(settings, "--settings"), arm)
    summary = train_arm(s, arm, fold, folds, cases, out, pretrained, progress=not quiet)
    from medtl.train.distributed import is_main

    if is_main():  # one summary line, not one per DDP process
        typer.echo(
            f"train {arm} fold {fold}: best validation Dice {summary['best_val_dice']:.3f} "
            f"at step {summary['best_step']} ({summary['seconds']:.0f} s)"
        )
