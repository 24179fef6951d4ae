"""Tests for the grid and value checks (medtl.io.checks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medtl.io.checks import (
    MAX_VOXELS,
    check_axes,
    check_finite,
    check_geometry,
    check_label_values,
    check_not_constant,
    check_size,
    content_key,
)
from medtl.kernel.errors import InputError

P = Path("x.nii.gz")


def test_label_values_checked_before_the_cast() -> None:
    # 256 would be 0 after astype(uint8): refused, and said so, before the cast
    with pytest.raises(InputError, match=r"label values 256 are not classes"):
        check_label_values(np.array([0, 1, 256], np.int16), P, {1: "a"})
    with pytest.raises(InputError, match=r"label values 256 .*allowed: 0 to 255"):
        check_label_values(np.array([0, 256], np.int16), P, None)
    # without classes (a pretraining source), any value of a uint8 label map
    out = check_label_values(np.array([0, 7, 255], np.int32), P, None)
    assert out.dtype == np.uint8 and out.tolist() == [0, 7, 255]
    assert check_label_values(np.array([True, False]), P, {1: "a"}).tolist() == [1, 0]


@pytest.mark.parametrize(
    "values, message",
    [
        ([0.0, np.nan], "not finite"),
        ([0.0, 1.25], "whole numbers, found 1.25"),
        ([0, -3], "non-negative, found -3"),
        ([0, 2], r"label values 2 are not classes \(found 0, 2; allowed: 0 \(background\), "),
    ],
)
def test_label_values_refused(values, message) -> None:
    with pytest.raises(InputError, match=message):
        check_label_values(np.array(values), P, {1: "a"})


def test_finite_names_count_and_first_voxel() -> None:
    a = np.zeros((3, 4, 5), np.float32)
    a[2, 1, 0] = np.nan
    a[2, 3, 4] = -np.inf
    with pytest.raises(
        InputError,
        match=r"2 voxels .*\(NaN and infinite; the first at voxel "
        r"\[2, 1, 0\] of 3x4x5\)",
    ):
        check_finite(a, P, "image")
    check_finite(np.zeros((2, 2, 2), np.int16), P, "image")  # integers are always finite


def test_constant_image() -> None:
    with pytest.raises(InputError, match=r"has the value -1024"):
        check_not_constant(np.full((2, 2, 2), -1024.0, np.float32), P, "image")
    check_not_constant(np.arange(8.0).reshape(2, 2, 2), P, "image")


@pytest.mark.parametrize(
    "shape, channels, message",
    [
        ((4, 4), False, "2-D image"),
        ((4, 4, 1), False, "1 voxel along axis 2"),
        ((1, 4, 4), False, "1 voxel along axis 0"),
        ((4, 4, 4, 3), False, "4-D image with 3 volumes"),
        ((4, 4, 4, 1, 3), True, "5-D image"),
    ],
)
def test_axes_refused(shape, channels, message) -> None:
    with pytest.raises(InputError, match=message):
        check_axes(shape, P, "image", channels)


def test_axes_accepted() -> None:
    check_axes((4, 4, 4, 1), P, "image")
    check_axes((4, 4, 4, 1, 1), P, "image")
    check_axes((4, 4, 4, 2), P, "image", channels=True)


def test_size_limit_and_empty_grid() -> None:
    check_size((1024, 1024, 1024), P, "image")  # exactly the limit
    assert MAX_VOXELS == 1024**3
    with pytest.raises(InputError, match=r"1,073,741,825 voxels, more than medtl reads"):
        check_size((MAX_VOXELS + 1, 1, 1), P, "image")
    with pytest.raises(InputError, match=r"empty image \(size 4x0x4\)"):
        check_size((4, 0, 4), P, "image")


def test_geometry() -> None:
    ok = np.diag([0.5, 0.5, 2.0, 1.0])
    assert check_geometry(ok, P, "image").dtype == np.float64
    bad = ok.copy()
    bad[1, 1] = 0
    with pytest.raises(InputError, match="voxel size 0 mm along axis 1"):
        check_geometry(bad, P, "image")
    bad = ok.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="not finite"):
        check_geometry(bad, P, "image")
    bad = ok.copy()
    bad[:3, 1] = [0.5, 0, 0]  # axis 1 along axis 0
    with pytest.raises(InputError, match="collinear"):
        check_geometry(bad, P, "image")


def test_content_key_sees_values_shape_and_type() -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert content_key(a) == content_key(np.array(a))
    assert content_key(a) != content_key(a.reshape(4, 3, 2))
    assert content_key(a) != content_key(a.astype(np.float64))
    b = a.copy()
    b[1, 2, 3] += 1
    assert content_key(a) != content_key(b)
