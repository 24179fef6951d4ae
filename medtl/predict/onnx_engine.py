"""``medtl predict --engine onnxruntime``: the ensemble of an ONNX export, run by ONNX Runtime.

The networks of a ``medtl export-onnx`` folder are wrapped as callables on torch tensors
(:class:`medtl.models.onnx_model.OnnxNetwork`), so the sliding window, mirroring,
ensembling, post-processing and writing of :func:`medtl.predict.run.predict_new` are the
same code for both engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from medtl.kernel.errors import InputError
from medtl.models.onnx_model import (
    MANIFEST,
    OnnxNetwork,
    is_onnx_export,
    load_onnx_export,
)
from medtl.predict.inference import Ensemble
from medtl.preprocess.plan import Plan
from medtl.trust.decision import TrustRule

#: The engines ``medtl predict`` runs networks with.
ENGINES = ("torch", "onnxruntime")


def onnx_engine(engine: str, model: Path) -> bool:
    """Whether to run ``model`` with ONNX Runtime; refuse engine and folder that do not fit.

    Raises:
        InputError: an unknown engine; ``onnxruntime`` with a results folder (export it
            first, with the command to run); ``torch`` with an export folder.
    """
    model = Path(model)
    if engine not in ENGINES:
        raise InputError(engine, f"unknown engine {engine!r}", f"use one of {', '.join(ENGINES)}")
    exported = is_onnx_export(model)
    if engine == "onnxruntime" and not exported:
        raise InputError(
            model,
            f"--engine onnxruntime needs a folder written by medtl export-onnx (holding "
            f"{MANIFEST}); this looks like a results folder or something else",
            f"export the arm first: medtl export-onnx --model {model} --arm ARM --out "
            "ONNX_DIR, then run medtl predict with --model ONNX_DIR --engine onnxruntime",
        )
    if engine == "torch" and exported:
        raise InputError(
            model,
            "an ONNX export (from medtl export-onnx) runs with ONNX Runtime only",
            "add --engine onnxruntime, or give --model the run's results folder",
        )
    return engine == "onnxruntime"


def onnx_ensemble(
    folder: Path, arm: str | None, seeds: Sequence[int] | None, postprocess: bool
) -> Ensemble:
    """Read an export folder and open one ONNX Runtime session per member.

    Each session uses as many threads as PyTorch (``--threads``).

    Raises:
        InputError: as :func:`load_onnx_export`, or ``arm`` is not the exported arm.
    """
    export = load_onnx_export(folder, list(seeds) if seeds else None)
    if arm is not None and arm != export.arm:
        raise InputError(
            folder,
            f"the export holds arm {export.arm!r}, not {arm!r}",
            f"leave --arm out, or export arm {arm!r} with medtl export-onnx",
        )
    threads = torch.get_num_threads()
    return Ensemble(
        arm=export.arm,
        plan=Plan.from_dict(export.plan),
        members=export.members,
        models=[OnnxNetwork(m.path, threads) for m in export.members],
        patch_size=export.patch_size,
        decision=export.postprocess if postprocess else None,
        device=torch.device("cpu"),
        trust=TrustRule.from_dict(export.calibration) if export.calibration else None,
        multiple=export.divisor,
    )
