"""The ``medtl`` app and what its commands share: option types, errors, settings.

The command modules (:mod:`.data`, :mod:`.prepare`, :mod:`.train`, :mod:`.predict`,
:mod:`.evaluate`, :mod:`.report`) add their commands to :data:`app`;
:mod:`medtl.cli.main` imports them in the order ``medtl --help`` lists them. Heavy
libraries are imported inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

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
Classes = Annotated[
    str, typer.Option(help='Label value → class name as JSON, e.g. {"1": "tumour"}.')
]
TargetPlan = Annotated[Path, typer.Option("--plan", help="The target's plan.json.")]
PretrainOut = Annotated[Path, typer.Option(help="Output folder (checkpoint.pt, curves.csv).")]
References = Annotated[Path, typer.Option(help="The ingest manifest.tsv (references).")]
FoldsJson = Annotated[Path, typer.Option(help="folds.json.")]
Predictions = Annotated[
    Path, typer.Option(help="Folder `predictions/` (holding `<arm>/seed<s>/fold<k>/`).")
]


def set_threads(n: int) -> None:
    """Let PyTorch use ``n`` CPU threads (at least one), denormals flushed."""
    import torch

    torch.set_num_threads(max(1, n))
    torch.set_flush_denormal(True)


def fail(exc: Exception) -> None:
    """Print ``medtl: error: ...`` in red on stderr and exit with code 1."""
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


def guard(fn):
    """Turn medtl's user errors into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from medtl.kernel.errors import MedtlError

        try:
            return fn(*args, **kwargs)
        except MedtlError as exc:
            fail(exc)

    return wrapper


def parse_classes(text: str, option: str = "--classes"):
    """A ``--classes`` JSON option (or ``@file.json``) as a
    :class:`~medtl.kernel.classes.ClassMap`."""
    from medtl.config import load_json_arg
    from medtl.kernel.classes import ClassMap

    return ClassMap.parse(load_json_arg(text, option), option)


def settings_seed(settings: dict[str, Any]) -> int:
    """The ``seed`` of a stage's settings; the config's default seed when left out."""
    from medtl.config import DEFAULT_SEED

    return int(settings.get("seed", DEFAULT_SEED))


def settings_device(settings: dict[str, Any]) -> str:
    """The ``device`` of a stage's settings (``auto`` when left out), checked."""
    from medtl.config import DEFAULT_DEVICE, check_device_name

    return check_device_name(str(settings.get("device", DEFAULT_DEVICE)))
