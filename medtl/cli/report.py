"""Commands that close and open a run: the report and the device check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtl.cli.common import Settings, app, guard


@app.command()
@guard
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
    from medtl.config import DEFAULT_CLASSES, ReportConfig, load_json_arg, parse_section
    from medtl.kernel.classes import ClassMap
    from medtl.provenance import redact_secrets, write_report_provenance
    from medtl.report.build import build_report

    cfg = redact_secrets(load_json_arg(settings, "--settings"))
    arms = list(cfg.get("arms", {}))
    classes = ClassMap.parse(cfg.get("classes", DEFAULT_CLASSES), "classes")
    rep = parse_section(ReportConfig, cfg.get("report"), "report")
    build_report(
        results,
        out,
        figures,
        summary,
        arms=arms,
        reference_arm=rep.reference_arm,
        classes=classes,
        config=cfg,
        n_overlays=rep.overlays,
    )
    write_report_provenance(cfg, out.parent)
    typer.echo(f"report: {out}")


@app.command("check-device")
@guard
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
    from medtl.config import check_device_name
    from medtl.kernel.device import check_devices
    from medtl.provenance import write_device_record

    found = check_devices(check_device_name(device, "--device"), gpus)
    if out is not None:
        write_device_record(found, out)
    count = found["gpus_found"]
    typer.echo(f"device: {found['name']}" + (f" ({count} GPU(s))" if count else ""))
