"""Small generated source and target sets, preprocessed as medtl shift reads them."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch

from medtl.config import ModelConfig
from medtl.demo.phantoms import draw_set, shifted_domain
from medtl.models.networks import build_network, get_architecture
from medtl.preprocess.case import preprocess_arrays
from medtl.preprocess.plan import Plan
from medtl.shift.measure import Encoder
from medtl.shift.sets import CaseSet

#: Twice the demo's spacing: the same anatomy on 24³ voxels (the source's grid).
COARSEN = 2.0
PLAN = Plan("MR", (4.0, 4.0, 4.0), "zscore", {}, True, (24, 24, 24), 1, {"1": "lesion"})
PATCH = (32, 32, 16)


def phantom_set(name: str, shift: float, seed: int, n: int, plan: Plan = PLAN) -> CaseSet:
    """``n`` demo phantoms at shift strength ``shift`` (0: the source domain), preprocessed."""
    domain = shifted_domain(shift, COARSEN)
    cases, spacing = [], []
    for p in draw_set(np.random.default_rng(seed), domain, n):
        affine = np.diag([*p.spacing, 1.0])
        image, label = nib.Nifti1Image(p.image, affine), nib.Nifti1Image(p.label, affine)
        cases.append(preprocess_arrays(image, label, plan))
        spacing.append(tuple(p.spacing))
    return CaseSet(
        name=name,
        case_ids=tuple(f"{name}{i:02d}" for i in range(n)),
        cases=tuple(cases),
        spacing=tuple(spacing),
        modality=("MR",) * n,
        orientation=("RAS",) * n,
        plan_spacing=plan.target_spacing,
    )


def random_encoder(seed: int = 0) -> Encoder:
    """A tiny BasicUNet with seeded random weights: its encoder still responds to contrast,
    noise and blur, which is what the demo's shift knob changes."""
    torch.manual_seed(seed)
    cfg = ModelConfig(features=(4, 4, 8, 8, 16, 4))
    return Encoder(build_network(cfg, 1, 2).eval(), get_architecture("basicunet"), "random")
