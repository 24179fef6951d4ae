"""The demo's shift-strength knob: 1 is the old target bit for bit, 0 the source."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medtl.demo.phantoms import (
    _DOMAINS,
    MAX_SHIFT,
    SOURCE,
    TARGET,
    draw_set,
    make_phantom,
    shifted_domain,
)


def test_shift_one_is_the_target_and_draws_the_same_numbers() -> None:
    assert shifted_domain(1.0) == TARGET
    assert shifted_domain(0.0) == SOURCE
    old = make_phantom(np.random.default_rng(3), TARGET)
    new = make_phantom(np.random.default_rng(3), shifted_domain(1.0))
    assert np.array_equal(old.image, new.image) and np.array_equal(old.label, new.label)


def test_every_field_moves_between_the_domains() -> None:
    half = shifted_domain(0.5)
    for name, (src, tgt) in _DOMAINS.items():
        got = np.asarray(getattr(half, name), float)
        assert np.array_equal(got, (np.asarray(src, float) + np.asarray(tgt, float)) / 2), name
    beyond = shifted_domain(1.5)
    assert beyond.noise > TARGET.noise and beyond.spacing[2] > TARGET.spacing[2]


@pytest.mark.parametrize(("shift", "coarsen"), [(-0.1, 1.0), (MAX_SHIFT + 0.1, 1.0), (1.0, 0.0)])
def test_out_of_range_is_refused(shift: float, coarsen: float) -> None:
    with pytest.raises(ValueError, match="expected 0 <= shift"):
        shifted_domain(shift, coarsen)


def test_coarsen_keeps_the_anatomy_on_fewer_voxels() -> None:
    small = shifted_domain(1.0, coarsen=2.0)
    assert dataclasses.replace(small, spacing=TARGET.spacing) == TARGET
    assert small.shape == tuple(s // 2 for s in TARGET.shape)
    (p,) = draw_set(np.random.default_rng(0), small, 1)
    assert p.image.shape == small.shape and set(np.unique(p.label)) == {0, 1, 2}
