"""Write a trained medtl arm as a MONAI bundle.

A MONAI bundle is a folder that MONAI's own tools (``monai.bundle``, MONAI Deploy,
MONAI Label) load and run without medtl::

    <bundle>/
        configs/metadata.json    versions, task, input/output format, medtl provenance
        configs/inference.json   network, preprocessing, inferer, postprocessing, run
        configs/logging.conf     console logging, as in MONAI model-zoo bundles
        models/model.pt          the network's plain state dict
        docs/README.md           what the bundle does and how to run it

The inference config uses MONAI components and config expressions only, so it runs
where only MONAI (with nibabel) is installed. It follows medtl's preprocessing
(:mod:`medtl.preprocess.case`) as closely as MONAI's transforms allow:

* reorientation to RAS, cropping to the non-zero bounding box and intensity
  normalisation are exact (the ``zscore`` normalisation is a config expression,
  because MONAI's ``NormalizeIntensityd(nonzero=True)`` leaves zero voxels at zero where
  medtl shifts them too);
* resampling is ``Spacingd`` with ``scale_extent=True``: the same output grid shape and
  first voxel as medtl, but exactly the plan's spacing where medtl stretches the
  cropped extent onto the rounded grid (a sub-voxel difference; masks are not
  bit-identical to ``medtl predict``).

A plain bundle holds one network, so the bundle carries one fold's model (fold 0 by
default); ``medtl predict`` averages all folds of the arm. An ensemble would need code
beyond MONAI's components, which the bundle is meant to avoid.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch

from medtl.config import ModelConfig, parse_section
from medtl.export.bundle_inference import (
    SUPPORTED_ARCHITECTURES,
    BundleExportError,
    inference_config,
    network_definition,
)
from medtl.export.bundle_metadata import BUNDLE_VERSION, metadata_config, readme
from medtl.io.outputs import check_separate
from medtl.kernel.errors import InputError
from medtl.kernel.files import sha256_file
from medtl.layout import TrainedRun, checkpoint_file, plan_file, runs_of_arm
from medtl.models.safe_read import WeightsFileError, safe_load
from medtl.preprocess.plan import Plan

__all__ = [
    "BUNDLE_VERSION",
    "SUPPORTED_ARCHITECTURES",
    "BundleExportError",
    "export_bundle",
    "inference_config",
    "metadata_config",
    "network_definition",
]

_LOGGING_CONF = """\
[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def _run_to_export(results: Path, arm: str, fold: int | None) -> tuple[TrainedRun, int]:
    """The training run to export (fold ``fold`` of the arm's first seed) and how many
    folds the arm has."""
    runs = runs_of_arm(
        results, arm, "give the results folder of a finished run and an arm it trained"
    )
    first = [r for r in runs if r.seed == runs[0].seed]
    k = 0 if fold is None else int(fold)
    match = [r for r in first if r.fold == k]
    if not match:
        have = ", ".join(str(r.fold) for r in first)
        raise InputError(
            checkpoint_file(results, arm, first[0].seed, k),
            f"arm {arm!r} has no trained model for fold {k} (folds found: {have})",
            "choose one of the folds found with --fold",
        )
    return match[0], len(first)


def _load_payload(checkpoint: Path) -> dict[str, Any]:
    rerun = f"rerun the training job that writes it: snakemake --cores all --forcerun {checkpoint}"
    payload = safe_load(checkpoint, remake=rerun)
    if not isinstance(payload, dict) or payload.get("format") != "medtl":
        raise WeightsFileError(
            checkpoint,
            "is not a medtl model checkpoint; expected the best.pt written by the train stage",
            rerun,
        )
    return payload


def _check_network(network_def: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
    """Build ``network_def`` as MONAI will and load the weights strictly into it."""
    from monai.bundle import ConfigParser

    net = ConfigParser({"network_def": network_def}).get_parsed_content("network_def")
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise BundleExportError(
            f"network_def {network_def['_target_']}: expected it to take the checkpoint's "
            f"weights, found a mismatch ({str(e).splitlines()[0]}). How to fix: report this "
            "as a medtl bug (the export's network arguments differ from training's)"
        ) from e


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise BundleExportError(
            f"{out}: expected a new output folder, found one that already exists. How to fix: "
            "choose another folder, or pass overwrite=True (--overwrite) to replace it"
        )


def export_bundle(
    results: Path, arm: str, out: Path, fold: int | None = None, overwrite: bool = False
) -> Path:
    """Write one fold of a trained arm as a MONAI bundle.

    The bundle (see the module docstring) runs with ``monai.bundle`` alone. It is built
    in a hidden folder beside ``out`` and renamed into place, so an interrupted export
    never leaves a folder that looks complete.

    Args:
        results: the results folder of a finished medtl run (holds the preprocessing plan
            and the arm's trained models, where :mod:`medtl.layout` puts them).
        arm: the trained arm to export, e.g. ``finetune``.
        out: the bundle folder to write.
        fold: the fold whose model goes into the bundle; fold 0 when None. A bundle holds
            one network, so the fold ensemble of ``medtl predict`` is not exported.
        overwrite: replace ``out`` if it exists (otherwise that is an error).

    Returns:
        The bundle folder, ``out``.

    Raises:
        InputError: the plan or the arm's checkpoint is missing.
        BundleExportError: the architecture or normalisation cannot be expressed, or
            ``out`` exists and ``overwrite`` is False.
    """
    results, out = Path(results), Path(out)
    check_separate(out, [results])
    plan = Plan.load(plan_file(results))
    run, n_folds = _run_to_export(results, arm, fold)
    checkpoint = run.path
    payload = _load_payload(checkpoint)
    cfg = parse_section(ModelConfig, payload["model"], "model")
    config = inference_config(plan, payload, cfg)
    _check_network(config["network_def"], payload["state_dict"])
    meta = metadata_config(
        plan, payload, arm, run.fold, n_folds, run.path.parent, sha256_file(checkpoint)
    )
    _refuse_existing(out, overwrite)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        (tmp / "configs").mkdir()
        (tmp / "models").mkdir()
        (tmp / "docs").mkdir()
        (tmp / "configs" / "inference.json").write_text(json.dumps(config, indent=4) + "\n")
        (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
        (tmp / "configs" / "logging.conf").write_text(_LOGGING_CONF)
        state = {name: t.detach().cpu().contiguous() for name, t in payload["state_dict"].items()}
        torch.save(state, tmp / "models" / "model.pt")
        (tmp / "docs" / "README.md").write_text(readme(plan, meta, config))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; results are meant to be shared
        _refuse_existing(out, overwrite)  # again: another export may have finished meanwhile
        if out.exists() or out.is_symlink():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
