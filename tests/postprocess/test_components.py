"""Connected-component operations (medtl.postprocess.components) on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from medtl.io.volume import spacing_of
from medtl.postprocess.components import (
    apply_operation,
    apply_postprocessing,
    keep_largest,
    remove_small,
)


def _two_blobs() -> np.ndarray:
    """A 2×2×2 cube (8 voxels) and a single voxel, far apart."""
    m = np.zeros((8, 8, 4), bool)
    m[1:3, 1:3, 1:3] = True
    m[6, 6, 0] = True
    return m


def test_keep_largest_keeps_the_big_blob():
    m = _two_blobs()
    out = keep_largest(m)
    assert out.dtype == bool and out.shape == m.shape
    assert out.sum() == 8 and out[1:3, 1:3, 1:3].all() and not out[6, 6, 0]


def test_components_are_26_connected():
    m = np.zeros((4, 4, 4), bool)
    m[0, 0, 0] = m[1, 1, 1] = m[2, 2, 2] = True  # touch only at corners: one component
    m[3, 0, 3] = True  # isolated
    out = keep_largest(m)
    assert out.sum() == 3 and not out[3, 0, 3]


def test_empty_masks_stay_empty():
    empty = np.zeros((3, 3, 3), bool)
    assert not keep_largest(empty).any()
    assert not remove_small(empty, (1.0, 1.0, 1.0), 10.0).any()
    assert not apply_operation(empty, "none", (1.0, 1.0, 1.0), 0.0).any()


def test_remove_small_uses_anisotropic_spacing():
    m = np.zeros((6, 6, 6), bool)
    m[0, 0, 0:3] = True  # 3 voxels
    m[4, 4, 4] = True  # 1 voxel
    # 1 × 1 × 2 mm voxels: 6 mm³ and 2 mm³; a component of exactly the threshold is kept.
    out = remove_small(m, (1.0, 1.0, 2.0), 6.0)
    assert out.sum() == 3 and out[0, 0, 0:3].all()
    assert remove_small(m, (1.0, 1.0, 2.0), 6.01).sum() == 0
    # 1 mm isotropic: the same 3 voxels are only 3 mm³.
    assert remove_small(m, (1.0, 1.0, 1.0), 6.0).sum() == 0
    assert remove_small(m, (1.0, 1.0, 1.0), 1.0).sum() == 4
    with pytest.raises(ValueError, match="one per mask axis"):
        remove_small(m, (1.0, 1.0), 1.0)


def test_apply_postprocessing_is_per_class_and_leaves_input_alone():
    labels = np.zeros((10, 6, 4), np.uint8)
    labels[0:3, 0:3, 0:2] = 1  # class 1, big (18 voxels)
    labels[3, 0, 0] = 2  # class 2 touching class 1: a class's components are its own
    labels[6:8, 0:2, 0:2] = 2  # class 2, 8 voxels
    labels[9, 5, 3] = 1  # class 1, stray voxel
    labels[9, 0, 3] = 2  # class 2, stray voxel
    before = labels.copy()
    decision = {
        "classes": {
            "a": {"value": 1, "chosen": "largest", "min_volume_mm3": 50.0},
            "b": {"value": 2, "chosen": "min_volume", "min_volume_mm3": 2.0},
        }
    }
    out = apply_postprocessing(labels, decision, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(labels, before)
    assert out is not labels and out.dtype == labels.dtype
    expected = before.copy()
    expected[9, 5, 3] = 0  # class 1: only the largest component stays
    expected[3, 0, 0] = 0  # class 2: single voxels (1 mm³ < 2 mm³) go
    expected[9, 0, 3] = 0
    np.testing.assert_array_equal(out, expected)

    nothing = {"classes": {"a": {"value": 1, "chosen": "none"}}}
    np.testing.assert_array_equal(apply_postprocessing(labels, nothing, (1, 1, 1)), before)


def test_unknown_operation_is_refused():
    with pytest.raises(ValueError, match="unknown post-processing 'biggest'"):
        apply_operation(np.ones((2, 2, 2), bool), "biggest", (1, 1, 1), 0.0)


def test_spacing_of_oblique_affine():
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.5, 0.7, 3.0])
    assert spacing_of(affine) == pytest.approx((0.5, 0.7, 3.0))
