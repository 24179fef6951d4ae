"""Write a trained arm's ensemble as ONNX files, for ONNX Runtime and other engines.

``medtl export-onnx`` writes every model ``medtl predict`` averages for the arm (each
fold × seed) as ``<arm>_seed<s>_fold<k>.onnx`` and one manifest,
:data:`medtl.models.onnx_model.MANIFEST`, with what a program needs to reproduce
``medtl predict``: the preprocessing plan, the class map, the patch size, the
sliding-window settings, the arm's post-processing decision, its calibration and flag rule
(``results/trust/<arm>.json``) and each file's SHA-256.

Each network takes float32 ``(batch, channels, x, y, z)`` and returns logits
``(batch, classes, x, y, z)`` (softmax over axis 1 gives the probabilities). The batch
and the three spatial axes are dynamic, but each spatial side must be a multiple of the
manifest's ``divisor`` (the network halves the grid that many times' log2); medtl's
sliding window always feeds windows of ``patch_size``, which is one.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from medtl.config import ModelConfig, PredictConfig, parse_section, to_dict
from medtl.io.outputs import check_separate, fresh_folder
from medtl.kernel.errors import InputError
from medtl.kernel.files import atomic_write_text, sha256_file
from medtl.layout import TrainedRun, plan_file, runs_of_arm
from medtl.models.networks import input_multiple
from medtl.models.onnx_model import (
    FORMAT,
    FORMAT_VERSION,
    INPUT_NAME,
    MANIFEST,
    OUTPUT_NAME,
)
from medtl.models.trained import load_model
from medtl.postprocess.choose import load_decision
from medtl.preprocess.plan import Plan
from medtl.trust.decision import load_trust

#: The ONNX operator set written (supported by ONNX Runtime 1.14 and later).
OPSET = 17

#: The names ``export-onnx`` writes into ``--out`` (to recognise an earlier export).
ONNX_OUTPUTS = (MANIFEST, "*.onnx")


def member_file(run: TrainedRun) -> str:
    """The file name of one member, e.g. ``finetune_seed1_fold0.onnx``.

    Example:
        >>> from medtl.layout import TrainedRun
        >>> member_file(TrainedRun("frozen", None, 2, Path("best.pt")))
        'frozen_fold2.onnx'
    """
    seed = "" if run.seed is None else f"_seed{run.seed}"
    return f"{run.arm}{seed}_fold{run.fold}.onnx"


def export_onnx(
    results: Path,
    arm: str,
    out: Path,
    seeds: list[int] | None = None,
    cfg: PredictConfig | None = None,
) -> Path:
    """Export every model of ``arm`` (every fold of every seed, or of ``seeds``) to ``out``.

    ``out`` is replaced as a whole when the export succeeds (it may be missing, empty or
    an earlier export), and left as it was when it fails.

    Returns:
        The manifest's path.

    Raises:
        InputError: no trained model of the arm or the seeds, or no plan.
    """
    results, out = Path(results), Path(out)
    check_separate(out, [results])
    cfg = cfg or PredictConfig()
    runs = runs_of_arm(results, arm, "give --model a finished run's results folder and its arm")
    if seeds:
        runs = [r for r in runs if r.seed in set(seeds)]
        if not runs:
            fix = "leave --seeds out"
            raise InputError(results, f"arm {arm!r} has no model of seeds {seeds}", fix)
    plan = Plan.load(plan_file(results))
    with fresh_folder(out, "export-onnx", known=ONNX_OUTPUTS, signature=(MANIFEST,)) as staging:
        members, first = [], None
        for run in runs:
            model, payload = load_model(run.path, torch.device("cpu"))
            first = first or payload
            target = staging / member_file(run)
            write_onnx(model, int(payload.get("in_channels", 1)), payload["patch_size"], target)
            members.append(
                {"file": target.name, "arm": run.arm, "seed": run.seed, "fold": run.fold,
                 "sha256": sha256_file(target)}
            )  # fmt: skip
        trust = load_trust(results, arm)
        calibration = trust.as_dict() if trust is not None else None
        decision = load_decision(results, arm)
        manifest = _manifest(arm, plan, first, cfg, decision, calibration, members)
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return out / MANIFEST


def write_onnx(model: torch.nn.Module, channels: int, patch: list[int], path: Path) -> None:
    """Trace ``model`` on one patch-sized window; batch and spatial axes dynamic.

    The tracer's warnings are silenced: they concern shape checks (e.g. BasicUNet pads
    a skip connection whose size differs from the upsampled one) that are constant for
    inputs whose sides are multiples of the divisor, which the manifest demands.
    """
    axes = {0: "batch", 2: "x", 3: "y", 4: "z"}
    example = torch.zeros(1, channels, *patch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            opset_version=OPSET,
            dynamo=False,
        )


def _divisor(model_cfg: dict) -> int:
    """The factor every spatial side of an input must be a multiple of (0: the patch only)."""
    return input_multiple(parse_section(ModelConfig, model_cfg, "model"))


def _manifest(
    arm: str,
    plan: Plan,
    payload: dict,
    cfg: PredictConfig,
    decision: dict | None,
    calibration: dict | None,
    members: list[dict],
) -> dict[str, Any]:
    """The content of :data:`MANIFEST` (see :mod:`medtl.models.onnx_model`)."""
    import onnx

    from medtl import __version__

    patch = [int(p) for p in payload["patch_size"]]
    divisor = _divisor(payload["model"])
    settings = to_dict(cfg)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arm": arm,
        "plan": asdict(plan),
        "classes": {str(k): v for k, v in dict(plan.class_map).items()},
        "patch_size": patch,
        "divisor": divisor,
        "in_channels": int(payload.get("in_channels", 1)),
        "num_classes": int(payload["num_classes"]),
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", "channels", "x", "y", "z"],
            "rule": (
                f"x, y and z multiples of {divisor}; medtl feeds windows of {patch}"
                if divisor
                else f"x, y and z exactly {patch}, the training patch the network is built for"
            ),
        },
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "softmax_axis": 1},
        "predict": {k: settings[k] for k in ("overlap", "mode", "tta", "sw_batch_size", "window")},
        "postprocess": decision,
        "calibration": calibration,
        "members": members,
        "versions": {
            "medtl": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnx_opset": OPSET,
        },
    }
