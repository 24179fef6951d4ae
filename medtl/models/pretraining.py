"""The voxel spacing and normalisation a pretrained checkpoint was trained with.

``preprocess.target_spacing: like_pretrained`` and ``preprocess.normalization:
like_pretrained`` preprocess the target data as the pretraining did, as nnU-Net's
``like_pretrained`` adaptation mode does for nnssl checkpoints. Only some files say how
they were pretrained:

* ``nnssl``: the adaptation plan's pretraining configuration (``spacing``,
  ``normalization_schemes``); a plan that did not resample (``noresample``) has no spacing,
  and the data set's median is used, as nnU-Net does.
* ``nnunet``: the plans' configuration the checkpoint was trained with (``spacing``,
  ``normalization_schemes``).
* ``medtl``: the ``plan.json`` of the run that trained it, copied beside the checkpoint
  (medtl checkpoints do not hold their plan).

Every other format is refused with the fix: give the spacing as three numbers.

nnU-Net and nnssl write a spacing in the axis order of their arrays, which their
SimpleITK reader lays out as (z, y, x); medtl's ``target_spacing`` is in (x, y, z) (RAS)
order, so it is reversed. An isotropic spacing (nnssl's ``onemmiso``) is the same either way.

Example:
    >>> p = Pretraining("checkpoint_final.pth", "nnssl plan", (1.0, 1.0, 1.0),
    ...                 ("ZScoreNormalization",))
    >>> p.label, p.medtl_normalization()
    ('checkpoint_final.pth, nnssl plan', 'zscore')
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtl.kernel.errors import ConfigError
from medtl.models.nnssl_plan import find_adaptation_plan, read_adaptation_plan
from medtl.models.nnunet_plans import plans_preprocessing
from medtl.models.safe_read import WeightsFileError, safe_load

#: nnU-Net's normalisation schemes → medtl's (``preprocess.normalization``).
NNUNET_SCHEMES = {"ZScoreNormalization": "zscore", "CTNormalization": "ct"}
#: The formats whose files say how they were pretrained.
SAYS_HOW = ("nnssl", "nnunet", "medtl")

_NUMBERS_FIX = (
    "set preprocess.target_spacing to three numbers in mm (the pretraining's spacing, from "
    "the weights' documentation, or auto) and preprocess.normalization to zscore or ct"
)


@dataclass(frozen=True)
class Pretraining:
    """How a checkpoint's pretraining data were preprocessed.

    Attributes:
        file: the checkpoint's file name (no folder: it goes into plan.json).
        kind: what said it: ``nnssl plan``, ``nnU-Net plans (3d_fullres)``, ``medtl plan.json``.
        spacing: the pretraining spacing in mm, (x, y, z); None: it did not resample.
        schemes: the normalisation per channel, as the checkpoint names it.
    """

    file: str
    kind: str
    spacing: tuple[float, float, float] | None
    schemes: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.file}, {self.kind}"

    def medtl_normalization(self) -> str:
        """medtl's name of the pretraining's normalisation.

        medtl normalises the first channel by ``ct`` or ``zscore`` and every other channel
        by ``zscore``, so a scheme list fits when its later channels are all z-score.

        Raises:
            ConfigError: no scheme recorded, or one medtl lacks (naming it).
        """
        names = [NNUNET_SCHEMES.get(s, s if s in ("zscore", "ct") else None) for s in self.schemes]
        if not names or None in names or any(n != "zscore" for n in names[1:]):
            got = ", ".join(self.schemes) or "none recorded"
            raise ConfigError(
                f"config key 'preprocess.normalization': like_pretrained, but {self.label} "
                f"normalised with {got}; medtl has {', '.join(NNUNET_SCHEMES)} (zscore, ct) "
                "for the first channel and z-score for the others. How to fix: set "
                "preprocess.normalization to zscore or ct"
            )
        return str(names[0])


def _xyz(value: Any, source: str) -> tuple[float, float, float] | None:
    """A spacing nnU-Net or nnssl wrote in (z, y, x) order, as (x, y, z); None if absent."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if value is None or (isinstance(value, Sequence) and not value):
        return None
    if not (isinstance(value, Sequence) and len(value) == 3 and None not in value):
        raise ConfigError(
            f"config key 'preprocess.target_spacing': like_pretrained, but {source} gives the "
            f"spacing {value!r}; expected three numbers. How to fix: {_NUMBERS_FIX}"
        )
    z, y, x = (float(v) for v in value)
    return (x, y, z)


def _medtl_plan(path: Path) -> Pretraining:
    plan_json = path.parent / "plan.json"
    if not plan_json.is_file():
        raise ConfigError(
            f"config key 'preprocess.target_spacing': like_pretrained, but {path.name} is a "
            "medtl checkpoint, which does not hold its preprocessing plan, and no plan.json "
            f"lies beside it. How to fix: copy the plan.json of the run that trained it "
            f"(results/preprocess/plan.json) to {plan_json.parent.name}/, or {_NUMBERS_FIX}"
        )
    try:
        plan = json.loads(plan_json.read_text())
        spacing = tuple(float(s) for s in plan["target_spacing"])
        scheme = str(plan["normalization"])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise WeightsFileError(
            plan_json,
            f"is not a medtl plan.json (expected target_spacing and normalization: {exc})",
            "copy the plan.json that medtl plan wrote for the run that trained the checkpoint",
        ) from None
    if len(spacing) != 3:
        raise WeightsFileError(plan_json, "target_spacing is not three numbers", "copy it again")
    return Pretraining(path.name, "medtl plan.json", spacing, (scheme,))  # type: ignore[arg-type]


def read_pretraining(path: Path, fmt: str = "auto") -> Pretraining:
    """How the checkpoint at ``path`` (of ``pretrain.format`` ``fmt``) was pretrained.

    Raises:
        ConfigError: the format does not record it, or a medtl checkpoint lacks its
            plan.json; each with the fix (three numbers).
        WeightsError: the file cannot be read, or its plans lack what is needed.
    """
    from medtl.models.weights import detect_format

    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors" or not path.is_file():
        what = "is a folder" if path.is_dir() else "is not a file"
        obj: Any = None
        detected = "safetensors" if path.suffix == ".safetensors" else what
    else:
        obj = safe_load(path)
        detected = detect_format(path, obj)
    fmt = detected if fmt == "auto" else fmt
    if fmt == "nnssl" and isinstance(obj, Mapping):
        raw, source = find_adaptation_plan(obj, path)
        plan = read_adaptation_plan(raw, source)
        spacing = _xyz(plan.pretrain_spacing, source)
        return Pretraining(path.name, "nnssl plan", spacing, plan.normalization)
    if fmt == "nnunet" and isinstance(obj, Mapping):
        source, name, spacing, schemes = plans_preprocessing(obj, path)
        found = _xyz(spacing, source)
        return Pretraining(path.name, f"nnU-Net plans ({name})", found, tuple(schemes))
    if fmt == "medtl" and isinstance(obj, Mapping):
        return _medtl_plan(path)
    raise ConfigError(
        f"like_pretrained (preprocess.target_spacing or preprocess.normalization) needs the "
        f"spacing and normalisation pretrain.checkpoint was pretrained with; {path.name} "
        f"({detected}, pretrain.format: {fmt}) does not record them: only {', '.join(SAYS_HOW)} "
        f"checkpoints do (their adaptation plan, plans, or plan.json). How to fix: "
        f"{_NUMBERS_FIX}"
    )
