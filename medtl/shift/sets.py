"""A set of cases as the shift measures see it: preprocessed with the target's plan.

Both sets are preprocessed in memory with the same plan, as pretraining preprocesses its
source (:func:`medtl.train.run.pretrain`): so the comparison is of what the network will
be given, after each set's normalisation, not of raw scanner values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl.io.manifest import read_manifest
from medtl.kernel.errors import InputError
from medtl.preprocess.case import PreprocessedCase, preprocess_files
from medtl.preprocess.plan import Plan


@dataclass(frozen=True)
class CaseSet:
    """Preprocessed cases of one set, with what their headers said.

    Attributes:
        name: ``source`` or ``target``.
        case_ids: the (hashed) case ids, as in the manifest.
        cases: each case on the plan's grid (image ``(channels, x, y, z)``, label or None).
        spacing: each case's original voxel size in mm, RAS axis order.
        modality: each case's modality as its manifest says.
        orientation: each case's axis codes (e.g. ``LPS``) as its manifest says.
        scanner: each case's scanner (manufacturer and model) as its manifest says, ``""``
            where the headers did not say (NIfTI input, or a manifest from before the column).
        plan_spacing: the grid's voxel size (mm) after preprocessing.
    """

    name: str
    case_ids: tuple[str, ...]
    cases: tuple[PreprocessedCase, ...]
    spacing: tuple[tuple[float, float, float], ...]
    modality: tuple[str, ...]
    orientation: tuple[str, ...]
    plan_spacing: tuple[float, float, float]
    scanner: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def images(self) -> list[np.ndarray]:
        return [c.image for c in self.cases]


def load_set(name: str, manifest: Path, plan: Plan) -> CaseSet:
    """Every case of an ingest manifest, preprocessed with ``plan``.

    Raises:
        InputError: the manifest is missing or lists fewer than 2 cases.
    """
    df = read_manifest(manifest)
    if len(df) < 2:
        raise InputError(
            manifest,
            f"the {name} set has {len(df)} case(s); measuring a shift needs 2 or more",
            f"add cases to the {name} set",
        )
    cases, spacing = [], []
    for row in df.itertuples():
        case = preprocess_files(Path(row.image), Path(row.label) if row.label else None, plan)
        cases.append(case)
        spacing.append(tuple(float(s) for s in case.meta["source_spacing"]))
    return CaseSet(
        name=name,
        case_ids=tuple(df["case_id"]),
        cases=tuple(cases),
        spacing=tuple(spacing),  # type: ignore[arg-type]
        modality=tuple(df.get("modality", [""] * len(df))),
        orientation=tuple(df.get("orientation", [""] * len(df))),
        plan_spacing=tuple(float(s) for s in plan.target_spacing),  # type: ignore[arg-type]
        scanner=tuple(df.get("scanner", [""] * len(df))),
    )
