"""Tests for 3D Slicer segmentations (medtl.io.slicer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medtl.io.image_file import ImageFile
from medtl.io.roi_names import build_name_map
from medtl.io.slicer import is_slicer_segmentation, read_slicer_segmentation
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError

AFFINE = np.array([[-1.0, 0, 0, 50], [0, -1.0, 0, 20], [0, 0, 2.0, -30], [0, 0, 0, 1]])
IMAGE = Volume(np.zeros((10, 9, 8), np.float32), AFFINE)
NAMES = build_name_map({1: "liver", 2: "tumour"}, {"tumour": ["GTV"]})


def _seg(array, fields, affine=AFFINE) -> ImageFile:
    return ImageFile(Path("s.seg.nrrd"), array, affine, fields)


def test_cropped_segmentation_placed_on_the_image_grid() -> None:
    cropped = np.zeros((3, 2, 2), np.uint8)
    cropped[1, 1, 1] = 1
    offset = np.array([4, 5, 2])
    affine = AFFINE.copy()
    affine[:3, 3] = (AFFINE @ [*offset, 1])[:3]
    seg = _seg(cropped, {"Segment0_Name": "GTV", "Segment0_LabelValue": "1"}, affine)
    assert is_slicer_segmentation(seg)
    out = read_slicer_segmentation(seg, IMAGE, NAMES)
    assert out.used == {"GTV": 2}
    assert np.argwhere(out.array).tolist() == [[5, 6, 3]]


def test_segmentation_reaching_outside_the_image_is_refused() -> None:
    cropped = np.ones((3, 3, 3), np.uint8)
    affine = AFFINE.copy()
    affine[:3, 3] = (AFFINE @ [8, 0, 0, 1])[:3]  # x 8..10 of 0..9
    seg = _seg(cropped, {"Segment0_Name": "liver"}, affine)
    with pytest.raises(InputError, match="segmentation geometry does not match its image"):
        read_slicer_segmentation(seg, IMAGE, NAMES)


def test_half_voxel_shift_is_refused() -> None:
    affine = AFFINE.copy()
    affine[2, 3] += 1.0  # half a 2 mm voxel
    seg = _seg(np.ones((10, 9, 8), np.uint8), {"Segment0_Name": "liver"}, affine)
    with pytest.raises(InputError, match="does not match its image"):
        read_slicer_segmentation(seg, IMAGE, NAMES)


def test_old_format_one_layer_per_segment() -> None:
    """Slicer before 4.11: no LabelValue / Layer fields; segment N is layer N, painted 1."""
    layers = np.zeros((10, 9, 8, 2), np.uint8)
    layers[0:2, 0:2, 0:2, 0] = 1
    layers[1:3, 1:3, 1:3, 1] = 1  # overlaps the first; same class: no clash
    seg = _seg(layers, {"Segment0_Name": "Liver", "Segment1_Name": "liver_2"})
    names = build_name_map({1: "liver"}, {"liver": ["liver_2"]})
    out = read_slicer_segmentation(seg, IMAGE, names)
    assert int((out.array == 1).sum()) == 8 + 8 - 1
    assert out.unmatched == []


def test_segment_in_a_missing_layer() -> None:
    seg = _seg(
        np.zeros((10, 9, 8), np.uint8),
        {"Segment0_Name": "liver", "Segment0_Layer": "3", "Segment0_LabelValue": "1"},
    )
    with pytest.raises(InputError, match="in layer 3, the file holds 1"):
        read_slicer_segmentation(seg, IMAGE, NAMES)


def test_non_integer_label_value() -> None:
    seg = _seg(
        np.zeros((10, 9, 8), np.uint8), {"Segment0_Name": "liver", "Segment0_LabelValue": "x"}
    )
    with pytest.raises(InputError, match="not an integer"):
        read_slicer_segmentation(seg, IMAGE, NAMES)
