"""Synthetic 3-D phantoms in which transfer learning matters.

Every phantom is a body (an ellipsoid of soft tissue under a smooth bias field) that
holds a few round blobs. Two kinds of blob look alike at first sight:

* **lesions** (the structure to segment): a bright rim around a dark core;
* **distractors**: blobs as bright as the rim but uniform, and dark cysts as dark
  as the core.

Telling them apart needs features of shape and context (a rim *around* a core), not
a threshold, so a network trained from scratch on a dozen cases learns it slowly,
while an encoder pretrained on the source domain brings such features along.

The *source* domain (for pretraining) and the *target* domain (the user's small data
set) differ in intensity profile, contrast, noise, bias field, voxel spacing and
orientation, so the pretrained encoder must adapt rather than be reused as is.
:func:`shifted_domain` moves the target along the line between the two, by a *shift
strength* (config ``dataset.demo.shift``): 0 draws the target from the source domain,
1 is the target domain above, values between interpolate every field and values above 1
extrapolate past the target (more noise, coarser slices, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Domain:
    """Intensity and geometry of one imaging domain.

    Attributes:
        spacing: voxel size in mm along the array axes.
        field_of_view: physical extent in mm along the array axes.
        tissue, rim, core, distractor, cyst, air: mean intensities.
        noise: standard deviation of the Gaussian noise.
        bias: amplitude of the multiplicative smooth bias field (0 = none).
    """

    spacing: tuple[float, float, float]
    field_of_view: tuple[float, float, float]
    tissue: float
    rim: float
    core: float
    distractor: float
    cyst: float
    air: float
    noise: float
    bias: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(
            int(round(f / s)) for f, s in zip(self.field_of_view, self.spacing, strict=True)
        )


#: The two domains side by side, field by field: (source, target).
_DOMAINS: dict[str, tuple[object, object]] = {
    "spacing": ((2.0, 2.0, 2.0), (2.0, 2.0, 4.0)),
    "field_of_view": ((96.0, 96.0, 96.0), (96.0, 96.0, 96.0)),
    "tissue": (100.0, 420.0),
    "rim": (190.0, 640.0),
    "core": (55.0, 300.0),
    "distractor": (190.0, 660.0),
    "cyst": (55.0, 290.0),
    "air": (0.0, 20.0),
    "noise": (12.0, 55.0),
    "bias": (0.1, 0.25),
}

#: The pretraining domain.
SOURCE = Domain(**{name: values[0] for name, values in _DOMAINS.items()})

#: The user's small data set: other intensities, contrast, noise, bias and slice spacing.
TARGET = Domain(**{name: values[1] for name, values in _DOMAINS.items()})

#: The largest shift strength: at 2 the slices are 6 mm (16 of them) and the noise 98,
#: still phantoms a network can segment; further out slices become too few.
MAX_SHIFT = 2.0


def _between(source: object, target: object, shift: float) -> object:
    """``(1 - shift) * source + shift * target``, field by field (tuples element-wise).

    Written so that shift 0 gives the source and shift 1 the target exactly, bit for bit
    (``0 * x + t == t``), whatever the rounding of ``t - s``.
    """
    if isinstance(source, tuple):
        return tuple(_between(s, t, shift) for s, t in zip(source, target, strict=True))
    return (1.0 - shift) * source + shift * target  # type: ignore[operator]


def shifted_domain(shift: float = 1.0, coarsen: float = 1.0) -> Domain:
    """The target domain moved ``shift`` of the way from the source domain.

    Args:
        shift: the shift strength, 0 to :data:`MAX_SHIFT`: 0 is :data:`SOURCE`, 1 is
            :data:`TARGET` (bit for bit), in between interpolates every field of the two
            domains (intensities, noise, bias, spacing), above 1 extrapolates.
        coarsen: multiply the spacing by this (same anatomy, fewer voxels): small, quick
            sets for tests. 1 leaves the domain as it is.

    Raises:
        ValueError: ``shift`` outside [0, MAX_SHIFT] or ``coarsen`` not positive.

    Example:
        >>> shifted_domain(1.0) == TARGET, shifted_domain(0.0) == SOURCE
        (True, True)
        >>> shifted_domain(0.5).noise, shifted_domain(0.5, coarsen=2).shape
        (33.5, (24, 24, 16))
    """
    if not 0.0 <= shift <= MAX_SHIFT or coarsen <= 0:
        raise ValueError(
            f"shift strength {shift} / coarsen {coarsen}: expected 0 <= shift <= {MAX_SHIFT} "
            "and coarsen > 0"
        )
    fields = {name: _between(*values, shift) for name, values in _DOMAINS.items()}
    if coarsen != 1.0:
        fields["spacing"] = tuple(s * coarsen for s in fields["spacing"])
    return Domain(**fields)


@dataclass(frozen=True)
class Phantom:
    """One generated case: image, label, and the geometry it was drawn on."""

    image: np.ndarray  # float32, [i, j, k]
    label: np.ndarray  # uint8, same shape
    spacing: tuple[float, float, float]


def _grid(domain: Domain) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axes = [
        (np.arange(n) + 0.5) * s - f / 2
        for n, s, f in zip(domain.shape, domain.spacing, domain.field_of_view, strict=True)
    ]
    return np.meshgrid(*axes, indexing="ij")


def _bias_field(rng: np.random.Generator, xyz, amplitude: float) -> np.ndarray:
    x, y, z = xyz
    coeffs = rng.normal(0, 1, size=4)
    field = (
        coeffs[0] * x / 48 + coeffs[1] * y / 48 + coeffs[2] * z / 48 + coeffs[3] * (x * y) / 48**2
    )
    return 1.0 + amplitude * np.tanh(field)


def _place_blobs(rng, n, body_axes, radius_range, placed):
    """Centres and radii of blobs inside the body that do not overlap earlier ones."""
    blobs = []
    for _ in range(200):
        if len(blobs) == n:
            break
        r = rng.uniform(*radius_range)
        c = rng.uniform(-1, 1, size=3) * (np.asarray(body_axes) - r - 4) * 0.8
        if np.sum((c / (np.asarray(body_axes) - r)) ** 2) > 0.7:
            continue
        if all(np.linalg.norm(c - c2) > r + r2 + 3 for c2, r2 in placed + blobs):
            blobs.append((c, r))
    return blobs


def make_phantom(rng: np.random.Generator, domain: Domain, n_lesions: int | None = None) -> Phantom:
    """Draw one phantom.

    Args:
        rng: the random generator (the only source of randomness).
        domain: intensity and geometry profile.
        n_lesions: number of lesions; drawn from 1-2 when None.

    Returns:
        The phantom; label 1 marks the body, 2 the lesions.

    Example:
        >>> p = make_phantom(np.random.default_rng(0), SOURCE)
        >>> p.image.shape, sorted(np.unique(p.label).tolist())
        ((48, 48, 48), [0, 1, 2])
    """
    xyz = _grid(domain)
    x, y, z = xyz
    axes = rng.uniform([36, 32, 36], [44, 40, 44])
    centre = rng.uniform(-3, 3, size=3)
    body = ((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 + (
        (z - centre[2]) / axes[2]
    ) ** 2 <= 1
    image = np.full(domain.shape, domain.air, np.float32)
    image[body] = domain.tissue
    label = body.astype(np.uint8)

    n_lesions = int(rng.integers(1, 3)) if n_lesions is None else n_lesions
    lesions = _place_blobs(rng, n_lesions, axes, (9.0, 14.0), [])
    distractors = _place_blobs(rng, int(rng.integers(2, 4)), axes, (8.0, 13.0), lesions)
    cysts = _place_blobs(rng, int(rng.integers(1, 3)), axes, (6.0, 10.0), lesions + distractors)

    def dist(c):
        return np.sqrt(
            (x - centre[0] - c[0]) ** 2 + (y - centre[1] - c[1]) ** 2 + (z - centre[2] - c[2]) ** 2
        )

    for c, r in lesions:
        d = dist(c)
        image[d <= r] = domain.rim
        image[d <= r * 0.55] = domain.core
        label[d <= r] = 2
    for c, r in distractors:
        image[dist(c) <= r] = domain.distractor
    for c, r in cysts:
        image[dist(c) <= r] = domain.cyst

    image = image * _bias_field(rng, xyz, domain.bias).astype(np.float32)
    image += rng.normal(0, domain.noise, size=image.shape).astype(np.float32)
    return Phantom(image=image.astype(np.float32), label=label, spacing=domain.spacing)


def draw_set(
    rng: np.random.Generator, domain: Domain, n: int, n_lesions: int | None = None
) -> list[Phantom]:
    """``n`` phantoms of one domain, drawn one after the other from ``rng``.

    With :func:`shifted_domain`'s ``coarsen`` this makes small source and target sets in
    a fraction of a second, for tests of what depends on the shift strength.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> [p.image.shape for p in draw_set(rng, shifted_domain(0.5, coarsen=4), 2)]
        [(12, 12, 8), (12, 12, 8)]
    """
    return [make_phantom(rng, domain, n_lesions) for _ in range(n)]
