"""A trained arm exported as ONNX (``medtl export-onnx``), and its networks run by ONNX Runtime.

An export folder holds one ``.onnx`` file per ensemble member (fold × seed) and
:data:`MANIFEST`, a JSON file describing how to use them::

    {"format": "medtl-onnx", "format_version": 1, "arm": ...,
     "plan": {...},            # preprocess/plan.json of the run
     "classes": {"1": ...},    # label value -> name
     "patch_size": [...], "divisor": 16, "in_channels": 1, "num_classes": 2,
     "input": {...}, "output": {...},   # tensor names, layout and shape rules
     "predict": {"overlap": ..., "mode": ..., "tta": ..., "sw_batch_size": ...},
     "postprocess": {...} | null,       # results/postprocess/<arm>.json
     "calibration": {...} | null,       # results/trust/<arm>.json's rule: temperature, flag
     "members": [{"file", "arm", "seed", "fold", "sha256"}, ...],
     "versions": {"medtl", "torch", "onnx", "onnx_opset"}}

The export writes it (:mod:`medtl.export.onnx`); ``medtl predict --engine onnxruntime``
reads it (:func:`load_onnx_export`). Both live above this module, so the format is
defined once here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtl.kernel.errors import InputError
from medtl.kernel.files import sha256_file

#: The JSON file that marks a folder as an ONNX export of medtl.
MANIFEST = "medtl-onnx.json"
FORMAT = "medtl-onnx"
FORMAT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class OnnxMember:
    """One exported network of the ensemble (same fields as a training run, plus its file)."""

    arm: str
    seed: int | None
    fold: int
    path: Path
    sha256: str


@dataclass(frozen=True)
class OnnxExport:
    """An export folder, read and checked: what ``medtl predict`` needs to run it."""

    folder: Path
    arm: str
    plan: dict[str, Any]
    patch_size: list[int]
    members: list[OnnxMember]
    postprocess: dict | None
    predict: dict[str, Any] = field(default_factory=dict)
    calibration: dict | None = None
    divisor: int = 0


def is_onnx_export(folder: Path) -> bool:
    """Whether ``folder`` is an export of ``medtl export-onnx`` (it holds :data:`MANIFEST`)."""
    return (Path(folder) / MANIFEST).is_file()


def load_onnx_export(folder: Path, seeds: list[int] | None = None) -> OnnxExport:
    """Read an export folder's manifest and check every member file against its SHA-256.

    Args:
        folder: the folder ``medtl export-onnx`` wrote.
        seeds: keep only the members of these seeds (None: all).

    Raises:
        InputError: the manifest is missing, not JSON or of another format; a member
            file is missing or its SHA-256 differs from the manifest's (the folder was
            mixed with another export's files); no member of the seeds asked for.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    again = f"rerun medtl export-onnx with --out {folder}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        reason = f"no {MANIFEST}: not an export of medtl export-onnx"
        raise InputError(folder, reason, again) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})", again) from exc
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found != FORMAT:
        raise InputError(path, f"expected 'format': {FORMAT!r}, found {found!r}", again)
    if data.get("format_version") != FORMAT_VERSION:
        raise InputError(
            path,
            f"format_version {data.get('format_version')!r}; this medtl reads {FORMAT_VERSION}",
            again + " with this medtl version",
        )
    members = [_member(folder, entry, again) for entry in data["members"]]
    if seeds:
        members = [m for m in members if m.seed in set(seeds)]
        if not members:
            raise InputError(path, f"no exported model of seeds {list(seeds)}", "leave --seeds out")
    return OnnxExport(
        folder=folder,
        arm=str(data["arm"]),
        plan=data["plan"],
        patch_size=[int(p) for p in data["patch_size"]],
        members=members,
        postprocess=data.get("postprocess"),
        predict=data.get("predict") or {},
        calibration=data.get("calibration"),
        divisor=int(data.get("divisor") or 0),
    )


def _member(folder: Path, entry: dict, again: str) -> OnnxMember:
    """One member entry, its file present and of the SHA-256 written beside it."""
    path = folder / str(entry["file"])
    if not path.is_file():
        raise InputError(path, f"model file listed in {MANIFEST} is missing", again)
    found = sha256_file(path)
    if found != entry["sha256"]:
        raise InputError(
            path,
            f"SHA-256 {found[:12]}… differs from {entry['sha256'][:12]}… in {MANIFEST}: "
            "the file is not the one exported with this manifest",
            again,
        )
    seed = entry.get("seed")
    return OnnxMember(
        arm=str(entry["arm"]),
        seed=None if seed is None else int(seed),
        fold=int(entry["fold"]),
        path=path,
        sha256=found,
    )


class OnnxNetwork(torch.nn.Module):
    """An ONNX file run by ONNX Runtime (CPU), called like the PyTorch network it came from.

    Takes and returns float32 ``(batch, channel, x, y, z)`` torch tensors, so MONAI's
    ``sliding_window_inference`` and medtl's ensembling and mirroring use it unchanged.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime's intra-op threads (0: its default, all cores).
    """

    def __init__(self, path: Path, threads: int = 0) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of windows (float32, CPU)."""
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return torch.from_numpy(logits)
