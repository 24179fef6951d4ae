"""What loading a checkpoint into a network's encoder did: :class:`LoadReport`.

:func:`medtl.models.transfer.plan_transfer` fills it; training writes it to
``run.json`` (:meth:`LoadReport.to_dict`) and its log (:meth:`LoadReport.summary`),
``medtl describe-model`` prints it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class LoadReport:
    """What a checkpoint initialised in the network's encoder.

    Attributes:
        source: the checkpoint file or folder.
        format: the weight format recognised.
        loaded: encoder keys copied from the checkpoint (adapted ones included).
        missing: encoder keys the checkpoint lacks (left at random init).
        unexpected: checkpoint encoder keys the network does not have.
        shape_mismatch: keys present in both with different shapes
            (``{"key", "checkpoint", "model"}``), left at random init.
        dropped: checkpoint keys outside the encoder (old decoder and head), not used.
        adapted: first-layer weights changed to another number of input channels
            (``{"key", "from", "to", "how"}``, ``how`` being ``"repeat/N"`` or ``"mean"``),
            and learned positional embeddings resized to another token grid (``from`` and
            ``to`` the grids, ``how`` ``"trilinear"``).
        notes: renames, ignored aliases, known differences from the pretraining network.
        encoder_params_total / encoder_params_loaded: parameter counts of the model's
            encoder, all and initialised.
        checkpoint_values_total / checkpoint_values_unused: values (elements) of the
            checkpoint's encoder tensors, all and those with no place in the model
            (unexpected or of other shape).
        stages: per encoder stage of the model, stem first: ``{"stage", "tensors",
            "loaded"}`` (tensor counts).
        suggestions: when something did not match, model settings that would match.
        not_transferred: per part of the network outside the encoder that the checkpoint
            has (``decoder``, ``head``): ``{"part", "tensors", "why"}``; never loaded.
        conflict: when the checkpoint says which network it holds (an nnssl plan) and the
            model is another: what each is; empty otherwise. Such a checkpoint is refused.
    """

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    adapted: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    encoder_params_total: int = 0
    encoder_params_loaded: int = 0
    checkpoint_values_total: int = 0
    checkpoint_values_unused: int = 0
    stages: list[dict[str, Any]] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    not_transferred: list[dict[str, Any]] = field(default_factory=list)
    conflict: str = ""

    @property
    def fraction_loaded(self) -> float:
        """Share of the encoder's parameters initialised from the checkpoint."""
        return self.encoder_params_loaded / max(self.encoder_params_total, 1)

    @property
    def fraction_unused(self) -> float:
        """Share of the checkpoint encoder's values that found no place in the model."""
        return self.checkpoint_values_unused / max(self.checkpoint_values_total, 1)

    @property
    def target_tensors(self) -> int:
        """Tensors of the model's encoder: loaded, missing or of other shape."""
        return len(self.loaded) + len(self.missing) + len(self.shape_mismatch)

    @property
    def checkpoint_tensors(self) -> int:
        """Tensors of the checkpoint's encoder part: loaded, unexpected or of other shape."""
        return len(self.loaded) + len(self.unexpected) + len(self.shape_mismatch)

    @property
    def unused_tensors(self) -> int:
        """Checkpoint encoder tensors with no place in the model."""
        return len(self.unexpected) + len(self.shape_mismatch)

    @property
    def skipped_stages(self) -> list[str]:
        """Encoder stages that get nothing although a deeper stage gets weights."""
        deepest = max((i for i, s in enumerate(self.stages) if s["loaded"]), default=0)
        return [s["stage"] for s in self.stages[:deepest] if not s["loaded"]]

    @property
    def adaptations(self) -> list[str]:
        """What was changed or left out on the way in, one line each, for people.

        Example:
            >>> r = LoadReport("w.pth", "nnssl", adapted=[{"key": "encoder.stem.w", "from": 1,
            ...     "to": 2, "how": "repeat/N"}], not_transferred=[{"part": "decoder",
            ...     "tensors": 12, "why": "not a segmentation decoder"}])
            >>> for line in r.adaptations:
            ...     print(line)
            encoder.stem.w: input channels 1 → 2 (kernel repeated over the 2 channels, divided by 2)
            decoder: 12 tensors skipped (not a segmentation decoder)
        """
        lines = []
        for a in self.adapted:
            if a["how"] == "trilinear":
                grids = [" × ".join(map(str, a[end])) for end in ("from", "to")]
                lines.append(
                    f"{a['key']}: positional embedding interpolated from {grids[0]} to "
                    f"{grids[1]} tokens (trilinear, as nnU-Net fine-tunes Primus)"
                )
                continue
            how = (
                f"kernel repeated over the {a['to']} channels, divided by {a['to']}"
                if a["how"] == "repeat/N"
                else f"kernels averaged over the {a['from']} channels"
            )
            lines.append(f"{a['key']}: input channels {a['from']} → {a['to']} ({how})")
        for part in self.not_transferred:
            lines.append(f"{part['part']}: {part['tensors']} tensors skipped ({part['why']})")
        return lines

    def summary(self) -> str:
        """One line for the train log: what loaded, what of the checkpoint was not used.

        Example:
            >>> r = LoadReport("w.pt", "medicalnet", loaded=["a", "b"], missing=["c"],
            ...                unexpected=["d"], encoder_params_total=4,
            ...                encoder_params_loaded=3, checkpoint_values_total=10,
            ...                checkpoint_values_unused=5)
            >>> print(r.summary())  # doctest: +NORMALIZE_WHITESPACE
            w.pt (medicalnet): loaded 2 of 3 encoder tensors of the model (75.0% of its
            parameters); 1 of 3 encoder tensors of the checkpoint unused (50.0% of their
            values); adapted 0; 0 checkpoint tensors outside the encoder not used
        """
        return (
            f"{self.source} ({self.format}): loaded {len(self.loaded)} of "
            f"{self.target_tensors} encoder tensors of the model ({self.fraction_loaded:.1%} "
            f"of its parameters); {self.unused_tensors} of {self.checkpoint_tensors} encoder "
            f"tensors of the checkpoint unused ({self.fraction_unused:.1%} of their values); "
            f"adapted {len(self.adapted)}; {len(self.dropped)} checkpoint tensors outside the "
            "encoder not used"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the fractions, the counts and the summary line."""
        d = asdict(self)
        d["fraction_loaded"] = self.fraction_loaded
        d["fraction_unused"] = self.fraction_unused
        d["target_tensors"] = self.target_tensors
        d["checkpoint_tensors"] = self.checkpoint_tensors
        d["unused_tensors"] = self.unused_tensors
        d["skipped_stages"] = self.skipped_stages
        d["adaptations"] = self.adaptations
        d["summary"] = self.summary()
        return d


@dataclass
class Transfer:
    """What loading would do: the report and the tensors it would copy.

    :func:`medtl.models.transfer.plan_transfer` makes it, and
    :func:`~medtl.models.transfer.load_pretrained` copies its tensors when accepted.

    Attributes:
        report: the load report (nothing checked against thresholds yet).
        tensors: model name → tensor to copy (adapted first-layer weights included,
            in the model's dtype).
    """

    report: LoadReport
    tensors: dict[str, torch.Tensor]
