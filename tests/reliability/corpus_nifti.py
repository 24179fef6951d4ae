"""Corpus entries: NIfTI images and labels, NRRD / MHA, case sheets."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from tests.reliability.corpus import (
    ACCEPTED,
    ERROR,
    SET_ASIDE,
    case,
    good_nifti_case,
    ingest_outcome,
    write_nifti,
)

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (8, 8, 6)
CLASSES = ["--classes", '{"1": "tumour"}']
# byte offsets of NIfTI-1 header fields
PIXDIM, QFORM_CODE, SFORM_CODE, SROW = 76, 252, 254, 280


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 400, SHAPE).astype(np.int16)


def _label(value: int = 1, dtype: str = "uint8") -> np.ndarray:
    label = np.zeros(SHAPE, dtype=dtype)
    label[2:5, 2:5, 2:4] = value
    return label


def _sheet(path: Path, rows: list[dict], sep: str = "\t") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep=sep, index=False)
    return path


def _case_files(folder: Path, name: str, seed: int = 0) -> tuple[Path, Path]:
    """A usable labelled case images/<name>.nii.gz + labels/<name>.nii.gz (its own voxels)."""
    return (
        write_nifti(folder / "images" / f"{name}.nii.gz", _image(seed)),
        write_nifti(folder / "labels" / f"{name}.nii.gz", _label(), dtype="uint8"),
    )


def _sheet_case(root: Path, image: Path, label: Path | None = None, **more) -> Path:
    """A sheet with a good case and the case under test; returns the sheet."""
    good_image, good_label = _case_files(root / "in", "good", seed=99)
    rows = [{"image": "images/good.nii.gz", "label": "labels/good.nii.gz"}]
    row = {"image": str(image.relative_to(root / "in"))}
    row["label"] = str(label.relative_to(root / "in")) if label is not None else ""
    rows.append(row | more)
    return _sheet(root / "in" / "cases.tsv", rows)


def _patched(path: Path, fields: list[tuple[int, str, tuple]], gz: bool = False) -> Path:
    """A NIfTI-1 file of :func:`_image` whose header fields are overwritten in place."""
    header = nib.Nifti1Image(_image(), AFFINE).header
    header["vox_offset"] = 352
    raw = bytearray(header.binaryblock + b"\0" * 4 + _image().tobytes(order="F"))
    for offset, fmt, values in fields:
        struct.pack_into(fmt, raw, offset, *values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path


def _manifest(outcome):
    return outcome.details["manifest"]


def _ingested(outcome, case_id: str) -> nib.Nifti1Image:
    row = _manifest(outcome).set_index("case_id").loc[case_id]
    return nib.load(row["image"])


def _run(root: Path, source: Path, target: str, extra=()):
    return lambda: ingest_outcome(source, root / "out" / "ingest", target, list(extra))


# ===================================================================== inputs destroyed


@case(
    "nifti_not_nifti",
    "NIfTI",
    "a `.nii.gz` file that holds text",
    SET_ASIDE,
    r"cannot read .* as NIfTI",
    names="broken.nii.gz",
)
def _(root):
    write_nifti(root / "in" / "good.nii.gz")
    (root / "in" / "broken.nii.gz").write_text("not an image\n")
    return lambda: ingest_outcome(root / "in", root / "out" / "ingest", "broken.nii.gz")


@case(
    "sheet_out_is_the_sheet_folder",
    "case sheet",
    "`medtl ingest cases.tsv --out .` beside `images/` and `labels/` (it overwrote inputs)",
    ERROR,
    r"--out contains the input .*never writes over or inside its input",
    names="cases.tsv",
)
def _(root):
    _case_files(root / "in", "a", seed=1)
    _case_files(root / "in", "b", seed=2)
    # case ids that differ from the file names: b's image would land on a's file
    sheet = _sheet(
        root / "in" / "cases.tsv",
        [
            {"image": "images/b.nii.gz", "label": "labels/b.nii.gz", "case_id": "a"},
            {"image": "images/a.nii.gz", "label": "labels/a.nii.gz", "case_id": "b"},
        ],
    )
    return lambda: ingest_outcome(sheet, root / "in", "cases.tsv")


@case(
    "sheet_out_holds_a_listed_image",
    "case sheet",
    "`--out` is the folder of images a sheet elsewhere lists",
    ERROR,
    r"--out contains the input .*a\.nii\.gz",
    names="a.nii.gz",
)
def _(root):
    _case_files(root / "in" / "data", "a", seed=1)
    sheet = _sheet(
        root / "in" / "sheets" / "cases.tsv",
        [{"image": "../data/images/a.nii.gz", "label": "../data/labels/a.nii.gz"}],
    )
    return lambda: ingest_outcome(sheet, root / "in" / "data" / "images", "a.nii.gz")


def _no_stale_files(outcome) -> None:
    names = sorted(p.name for p in (outcome.output / "images").iterdir())
    assert names == ["good.nii.gz"], names
    assert not (outcome.output / "labels" / "old_case.nii.gz").exists()
    assert list(_manifest(outcome)["case_id"]) == ["good"]


@case(
    "nifti_earlier_output_replaced",
    "NIfTI",
    "`--out` holds an earlier run's `images/`, `labels/` (no marker): replaced, not mixed",
    ACCEPTED,
    r"^$",
    check=_no_stale_files,
)
def _(root):
    good_nifti_case(root / "in")
    for sub in ("images", "labels"):
        write_nifti(root / "out" / "ingest" / sub / "old_case.nii.gz")
    return _run(root, root / "in", "good.nii.gz")


def _recorded_paths_are_final(outcome) -> None:
    for path in _manifest(outcome)["image"]:
        assert Path(path).parent == outcome.output / "images", path
        assert Path(path).is_file(), path


@case(
    "nifti_manifest_paths_under_out",
    "NIfTI",
    "a folder with `images/` and `labels/`: pairs by name, the manifest names the final files",
    ACCEPTED,
    r"^$",
    check=_recorded_paths_are_final,
)
def _(root):
    good_nifti_case(root / "in")
    return _run(root, root / "in", "good.nii.gz")


def _one_copy(outcome) -> None:
    assert list(_manifest(outcome)["case_id"]) == ["good", "first"]


@case(
    "sheet_same_scan_two_patients",
    "case sheet",
    "one scan saved as `.nii.gz` and again as `.nii`, listed under two patients",
    SET_ASIDE,
    r"the same image as .*first\.nii\.gz.*training and .*test set",
    names="copy.nii",
    check=_one_copy,
)
def _(root):
    image, label = _case_files(root / "in", "first", seed=3)
    copy = root / "in" / "images" / "copy.nii"
    nib.save(nib.load(image), str(copy))
    sheet = _sheet_case(root, image, label, patient="P1", case_id="first")
    rows = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False).to_dict("records")
    rows.append({"image": "images/copy.nii", "label": "", "patient": "P2", "case_id": "second"})
    _sheet(sheet, rows)
    return _run(root, sheet, "copy.nii")


# ===================================================================== values


@case(
    "nifti_nan_voxel",
    "NIfTI",
    "a float image with one NaN voxel (z-scoring would make it all NaN)",
    SET_ASIDE,
    r"1 voxel that is not finite \(NaN; the first at voxel \[3, 4, 5\]",
    names="nan.nii.gz",
)
def _(root):
    good_nifti_case(root / "in")
    data = _image().astype(np.float32)
    data[3, 4, 5] = np.nan
    write_nifti(root / "in" / "images" / "nan.nii.gz", data, dtype="float32")
    return _run(root, root / "in", "nan.nii.gz")


@case(
    "nifti_inf_voxel",
    "NIfTI",
    "a float image with infinite voxels",
    SET_ASIDE,
    r"2 voxels that are not finite \(infinite",
    names="inf.nii.gz",
)
def _(root):
    good_nifti_case(root / "in")
    data = _image().astype(np.float32)
    data[0, 0, 0], data[1, 1, 1] = np.inf, -np.inf
    write_nifti(root / "in" / "images" / "inf.nii.gz", data, dtype="float32")
    return _run(root, root / "in", "inf.nii.gz")


@case(
    "nifti_all_zeros",
    "NIfTI",
    "an image whose every voxel is 0 (a failed export)",
    SET_ASIDE,
    r"every voxel of the image has the value 0",
    names="blank.nii.gz",
)
def _(root):
    good_nifti_case(root / "in")
    write_nifti(root / "in" / "images" / "blank.nii.gz", np.zeros(SHAPE))
    return _run(root, root / "in", "blank.nii.gz")


@case(
    "nifti_label_256",
    "NIfTI",
    "an int16 label holding 256 (a cast to uint8 would make it 0: the lesion vanishes)",
    SET_ASIDE,
    r"label values 256 are not classes .*allowed: 0 \(background\), 1 \(tumour\)",
    names="big.nii.gz",
)
def _(root):
    image = write_nifti(root / "in" / "images" / "big.nii.gz", _image(5))
    label = write_nifti(root / "in" / "labels" / "big.nii.gz", _label(256, "int16"), dtype="int16")
    return _run(root, _sheet_case(root, image, label), "big.nii.gz", CLASSES)


@case(
    "nifti_label_255",
    "NIfTI",
    "a label holding 255 (an 'ignore' value), classes {1: tumour}",
    SET_ASIDE,
    r"label values 255 are not classes \(found 0, 1, 255",
    names="ignore.nii.gz",
)
def _(root):
    image = write_nifti(root / "in" / "images" / "ignore.nii.gz", _image(6))
    data = _label()
    data[0, 0, 0] = 255
    label = write_nifti(root / "in" / "labels" / "ignore.nii.gz", data, dtype="uint8")
    return _run(root, _sheet_case(root, image, label), "ignore.nii.gz", CLASSES)


@case(
    "nifti_label_class_missing",
    "NIfTI",
    "a label holding 2 where the config's classes are only {1: tumour}",
    SET_ASIDE,
    r"label values 2 are not classes.*Fix: name every label value under `classes`",
    names="two.nii.gz",
)
def _(root):
    image = write_nifti(root / "in" / "images" / "two.nii.gz", _image(7))
    label = write_nifti(root / "in" / "labels" / "two.nii.gz", _label(2), dtype="uint8")
    return _run(root, _sheet_case(root, image, label), "two.nii.gz", CLASSES)


@case(
    "nifti_label_float_values",
    "NIfTI",
    "a label with fractional values (an interpolated mask)",
    SET_ASIDE,
    r"label values must be whole numbers, found 0\.5",
    names="soft.nii.gz",
)
def _(root):
    image = write_nifti(root / "in" / "images" / "soft.nii.gz", _image(8))
    data = _label().astype(np.float32)
    data[2, 2, 2] = 0.5
    label = write_nifti(root / "in" / "labels" / "soft.nii.gz", data, dtype="float32")
    return _run(root, _sheet_case(root, image, label), "soft.nii.gz", CLASSES)


@case(
    "nifti_label_negative",
    "NIfTI",
    "a label with a negative value",
    SET_ASIDE,
    r"label values must be non-negative, found -1",
    names="neg.nii.gz",
)
def _(root):
    image = write_nifti(root / "in" / "images" / "neg.nii.gz", _image(9))
    label = write_nifti(root / "in" / "labels" / "neg.nii.gz", _label(-1, "int16"), dtype="int16")
    return _run(root, _sheet_case(root, image, label), "neg.nii.gz", CLASSES)


def _label_kept(outcome) -> None:
    row = _manifest(outcome).set_index("case_id").loc["whole"]
    values = np.asarray(nib.load(row["label"]).dataobj)
    assert values.dtype == np.uint8 and set(np.unique(values)) == {0, 1}


@case(
    "nifti_label_float_whole_numbers",
    "NIfTI",
    "a float32 label holding only 0.0 and 1.0",
    ACCEPTED,
    r"^$",
    check=_label_kept,
)
def _(root):
    image = write_nifti(root / "in" / "images" / "whole.nii.gz", _image(10))
    label = write_nifti(
        root / "in" / "labels" / "whole.nii.gz", _label().astype(np.float32), dtype="float32"
    )
    return _run(root, _sheet_case(root, image, label), "whole.nii.gz", CLASSES)


@case(
    "nifti_4d_image",
    "NIfTI",
    "a 4-D NIfTI (3 volumes) in a folder of images",
    SET_ASIDE,
    r"4-D image with 3 volumes .*one 3-D volume per file.*Fix: split it",
    names="series4d.nii.gz",
)
def _(root):
    good_nifti_case(root / "in")
    data = np.stack([_image(i) for i in range(3)], axis=3)
    write_nifti(root / "in" / "images" / "series4d.nii.gz", data)
    return _run(root, root / "in", "series4d.nii.gz")


def _trailing_axis_dropped(outcome) -> None:
    assert _ingested(outcome, "trailing").shape == SHAPE


@case(
    "nifti_trailing_axis_of_one",
    "NIfTI",
    "a 3-D image saved with a fourth axis of length 1",
    ACCEPTED,
    r"^$",
    check=_trailing_axis_dropped,
)
def _(root):
    good_nifti_case(root / "in")
    write_nifti(root / "in" / "images" / "trailing.nii.gz", _image(11)[..., None])
    return _run(root, root / "in", "trailing.nii.gz")


@case(
    "nifti_msd_4d_without_modality",
    "NIfTI",
    "an MSD folder with a 4-D image whose dataset.json names no channels",
    SET_ASIDE,
    r"4-D image with 2 volumes, but dataset.json names no channels",
    names="multi.nii.gz",
)
def _(root):
    folder = root / "in"
    write_nifti(folder / "imagesTr" / "multi.nii.gz", np.stack([_image(1), _image(2)], axis=3))
    write_nifti(folder / "labelsTr" / "multi.nii.gz", _label(), dtype="uint8")
    write_nifti(folder / "imagesTr" / "plain.nii.gz", _image(3))
    write_nifti(folder / "labelsTr" / "plain.nii.gz", _label(), dtype="uint8")
    meta = {
        "labels": {"0": "background", "1": "tumour"},
        "training": [
            {"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"}
            for n in ("multi", "plain")
        ],
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return _run(root, folder, "multi.nii.gz")


@case(
    "nifti_single_slice",
    "NIfTI",
    "a NIfTI of one slice (8x8x1)",
    SET_ASIDE,
    r"1 voxel along axis 2 .*a single slice is a 2-D image, not a 3-D scan",
    names="slice.nii.gz",
)
def _(root):
    good_nifti_case(root / "in")
    write_nifti(root / "in" / "images" / "slice.nii.gz", _image()[:, :, :1])
    return _run(root, root / "in", "slice.nii.gz")


@case(
    "nifti_2d_image",
    "NIfTI",
    "a 2-D NIfTI (dim[0] = 2)",
    SET_ASIDE,
    r"2-D image \(shape 8x8\): medtl expects a 3-D volume",
    names="flat.nii.gz",
)
def _(root):
    good_nifti_case(root / "in")
    write_nifti(root / "in" / "images" / "flat.nii.gz", _image()[:, :, 0])
    return _run(root, root / "in", "flat.nii.gz")


@case(
    "nifti_zero_pixdim",
    "NIfTI",
    "a qform-only NIfTI with pixdim 0 along one axis (nibabel would make it 1 mm)",
    SET_ASIDE,
    r"voxel size 0 mm along axis 1 in the header",
    names="zero.nii",
)
def _(root):
    good_nifti_case(root / "in")
    _patched(
        root / "in" / "images" / "zero.nii",
        [(PIXDIM, "<4f", (1, 2, 0, 2)), (QFORM_CODE, "<h", (1,)), (SFORM_CODE, "<h", (0,))],
    )
    return _run(root, root / "in", "zero.nii")


@case(
    "nifti_nan_pixdim",
    "NIfTI",
    "a NIfTI without sform whose pixdim is NaN",
    SET_ASIDE,
    r"voxel size nan mm along axis 2",
    names="nanpix.nii",
)
def _(root):
    good_nifti_case(root / "in")
    _patched(
        root / "in" / "images" / "nanpix.nii",
        [(PIXDIM, "<4f", (1, 2, 2, float("nan"))), (SFORM_CODE, "<h", (0,))],
    )
    return _run(root, root / "in", "nanpix.nii")


@case(
    "nifti_negative_pixdim",
    "NIfTI",
    "a NIfTI without sform whose pixdim is negative (nibabel would flip its sign)",
    SET_ASIDE,
    r"voxel size -2 mm along axis 0",
    names="negpix.nii",
)
def _(root):
    good_nifti_case(root / "in")
    _patched(
        root / "in" / "images" / "negpix.nii",
        [(PIXDIM, "<4f", (1, -2, 2, 2)), (SFORM_CODE, "<h", (0,))],
    )
    return _run(root, root / "in", "negpix.nii")


@case(
    "nifti_singular_sform",
    "NIfTI",
    "a NIfTI whose sform has a zero column (a singular affine)",
    SET_ASIDE,
    r"voxel size 0 mm along axis 1",
    names="singular.nii",
)
def _(root):
    good_nifti_case(root / "in")
    srow = (2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0)
    _patched(
        root / "in" / "images" / "singular.nii",
        [(SFORM_CODE, "<h", (1,)), (SROW, "<12f", srow)],
    )
    return _run(root, root / "in", "singular.nii")


@case(
    "nifti_collinear_axes",
    "NIfTI",
    "a NIfTI whose sform maps two axes onto one direction",
    SET_ASIDE,
    r"axes are collinear",
    names="collinear.nii",
)
def _(root):
    good_nifti_case(root / "in")
    srow = (2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0)
    _patched(
        root / "in" / "images" / "collinear.nii",
        [(SFORM_CODE, "<h", (1,)), (SROW, "<12f", srow)],
    )
    return _run(root, root / "in", "collinear.nii")


def _affine_is(expected):
    def check(outcome) -> None:
        got = _ingested(outcome, "geom").affine
        np.testing.assert_allclose(got, expected, atol=1e-5)

    return check


SFORM = np.array([[0, 0, 3.0, -10], [2.0, 0, 0, 5], [0, 1.5, 0, 7], [0, 0, 0, 1]])


@case(
    "nifti_sform_only",
    "NIfTI",
    "a NIfTI with an sform (code 2) and qform code 0",
    ACCEPTED,
    r"^$",
    check=_affine_is(SFORM),
)
def _(root):
    good_nifti_case(root / "in")
    img = nib.Nifti1Image(_image(12), SFORM)
    img.set_sform(SFORM, code=2)
    img.set_qform(None, code=0)
    nib.save(img, str(root / "in" / "images" / "geom.nii.gz"))
    return _run(root, root / "in", "geom.nii.gz")


@case(
    "nifti_qform_only",
    "NIfTI",
    "a NIfTI with a qform (code 1) and sform code 0",
    ACCEPTED,
    r"^$",
    check=_affine_is(SFORM),
)
def _(root):
    good_nifti_case(root / "in")
    img = nib.Nifti1Image(_image(12), SFORM)
    img.set_qform(SFORM, code=1)
    img.set_sform(None, code=0)
    nib.save(img, str(root / "in" / "images" / "geom.nii.gz"))
    return _run(root, root / "in", "geom.nii.gz")


def _big_endian_values(outcome) -> None:
    np.testing.assert_array_equal(
        np.asarray(_ingested(outcome, "big").dataobj), _image(13).astype(np.float32)
    )


@case(
    "nifti_big_endian",
    "NIfTI",
    "a big-endian NIfTI",
    ACCEPTED,
    r"^$",
    check=_big_endian_values,
)
def _(root):
    good_nifti_case(root / "in")
    header = nib.Nifti1Header(endianness=">")
    img = nib.Nifti1Image(_image(13).astype(">i2"), AFFINE, header)
    nib.save(img, str(root / "in" / "images" / "big.nii"))
    assert (root / "in" / "images" / "big.nii").read_bytes()[:4] == (348).to_bytes(4, "big")
    return _run(root, root / "in", "big.nii")


def _pair_values(outcome) -> None:
    np.testing.assert_array_equal(
        np.asarray(_ingested(outcome, "pair").dataobj), _image(14).astype(np.float32)
    )


@case(
    "nifti_hdr_img_pair",
    "NIfTI",
    "a NIfTI `.hdr` / `.img` pair",
    ACCEPTED,
    r"^$",
    check=_pair_values,
)
def _(root):
    good_nifti_case(root / "in")
    nib.save(nib.Nifti1Pair(_image(14), AFFINE), str(root / "in" / "images" / "pair.img"))
    return _run(root, root / "in", "pair.hdr")


@case(
    "nifti_hdr_without_img",
    "NIfTI",
    "a NIfTI `.hdr` whose `.img` is missing",
    SET_ASIDE,
    r"voxel file lonely\.img is missing",
    names="lonely.hdr",
)
def _(root):
    good_nifti_case(root / "in")
    nib.save(nib.Nifti1Pair(_image(15), AFFINE), str(root / "in" / "images" / "lonely.img"))
    (root / "in" / "images" / "lonely.img").unlink()
    return _run(root, root / "in", "lonely.hdr")


@case(
    "nifti_analyze_pair",
    "NIfTI",
    "an Analyze 7.5 `.hdr` / `.img` pair (no orientation)",
    SET_ASIDE,
    r"Analyze 7\.5 header .*does not say how the voxels are oriented",
    names="old.hdr",
)
def _(root):
    good_nifti_case(root / "in")
    nib.save(nib.AnalyzeImage(_image(16), AFFINE), str(root / "in" / "images" / "old.img"))
    return _run(root, root / "in", "old.hdr")


def _declaring(shape, gz: bool, path: Path) -> Path:
    """A NIfTI header declaring ``shape`` int16 voxels, followed by no voxel at all."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@case(
    "nifti_gz_header_declares_gigabytes",
    "NIfTI",
    "an 81-byte `.nii.gz` whose header declares 1500x1500x500 int16 (it took 4.5 GB)",
    SET_ASIDE,
    r"declares 1500x1500x500 voxels \(2,250,000,000 bytes.*decompresses to 352 bytes",
    names="bomb.nii.gz",
)
def _(root):
    good_nifti_case(root / "in")
    _declaring((1500, 1500, 500), True, root / "in" / "images" / "bomb.nii.gz")
    return _run(root, root / "in", "bomb.nii.gz")


@case(
    "nifti_header_declares_more_than_file",
    "NIfTI",
    "an uncompressed `.nii` whose header declares more voxels than the file holds",
    SET_ASIDE,
    r"truncated or its header is wrong.*the file holds 352 bytes",
    names="short.nii",
)
def _(root):
    good_nifti_case(root / "in")
    _declaring((300, 300, 200), False, root / "in" / "images" / "short.nii")
    return _run(root, root / "in", "short.nii")


@case(
    "nifti_header_beyond_limit",
    "NIfTI",
    "a `.nii.gz` declaring 2048x2048x2048 int16 (its gzip size field agrees, modulo 2**32)",
    SET_ASIDE,
    r"more than medtl reads from one file \(1,073,741,824 voxels",
    names="huge.nii.gz",
)
def _(root):
    good_nifti_case(root / "in")
    _declaring((2048, 2048, 2048), True, root / "in" / "images" / "huge.nii.gz")
    return _run(root, root / "in", "huge.nii.gz")


@case(
    "nifti_gzip_truncated",
    "NIfTI",
    "a `.nii.gz` cut off in the middle (an interrupted copy)",
    SET_ASIDE,
    r"truncated or its header is wrong.*decompression fails after .*EOFError",
    names="cut.nii.gz",
)
def _(root):
    good_nifti_case(root / "in")
    full = write_nifti(root / "in" / "images" / "cut.nii.gz", _image(17))
    full.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    return _run(root, root / "in", "cut.nii.gz")


def _uncompressed_values(outcome) -> None:
    np.testing.assert_array_equal(
        np.asarray(_ingested(outcome, "plain").dataobj), _image(18).astype(np.float32)
    )


@case(
    "nifti_gz_not_compressed",
    "NIfTI",
    "a `.nii.gz` that is really uncompressed (read by its content)",
    ACCEPTED,
    r"^$",
    check=_uncompressed_values,
)
def _(root):
    good_nifti_case(root / "in")
    plain = write_nifti(root / "in" / "images" / "plain.nii", _image(18))
    plain.rename(root / "in" / "images" / "plain.nii.gz")
    return _run(root, root / "in", "plain.nii.gz")


@case(
    "nifti_rgb_voxels",
    "NIfTI",
    "an RGB NIfTI (three bytes per voxel)",
    SET_ASIDE,
    r"data type .* is not a real number type",
    names="colour.nii",
)
def _(root):
    good_nifti_case(root / "in")
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    img = nib.Nifti1Image(rgb, AFFINE)
    nib.save(img, str(root / "in" / "images" / "colour.nii"))
    return _run(root, root / "in", "colour.nii")


# ===================================================================== labels and grids


@case(
    "nifti_label_other_shape",
    "NIfTI",
    "a label on another grid (shape)",
    SET_ASIDE,
    r"label shape \(8, 8, 5\) does not match image shape \(8, 8, 6\)",
    names="shape.nii.gz",
)
def _(root):
    image = write_nifti(root / "in" / "images" / "img.nii.gz", _image(19))
    label = write_nifti(root / "in" / "labels" / "shape.nii.gz", _label()[:, :, :5], dtype="uint8")
    return _run(root, _sheet_case(root, image, label), "shape.nii.gz")


@case(
    "nifti_label_other_affine",
    "NIfTI",
    "a label on another grid (shifted 10 mm)",
    SET_ASIDE,
    r"label geometry \(affine\) does not match its image",
    names="moved.nii.gz",
)
def _(root):
    image = write_nifti(root / "in" / "images" / "img.nii.gz", _image(20))
    moved = AFFINE.copy()
    moved[:3, 3] += 10
    label = write_nifti(root / "in" / "labels" / "moved.nii.gz", _label(), moved, dtype="uint8")
    return _run(root, _sheet_case(root, image, label), "moved.nii.gz")


@case(
    "nifti_missing_label",
    "NIfTI",
    "a sheet row whose label file does not exist",
    SET_ASIDE,
    r"label file not found",
    names="gone.nii.gz",
)
def _(root):
    image = write_nifti(root / "in" / "images" / "img.nii.gz", _image(21))
    sheet = _sheet_case(root, image)
    rows = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    rows.loc[1, "label"] = "labels/gone.nii.gz"
    rows.to_csv(sheet, sep="\t", index=False)
    return _run(root, sheet, "gone.nii.gz")


@case(
    "nifti_label_without_image",
    "NIfTI",
    "a folder whose `labels/` holds a label with no image of that name",
    SET_ASIDE,
    r"label has no image \(expected a file named orphan\.\* in the sibling images/ folder",
    names="orphan.nii.gz",
)
def _(root):
    good_nifti_case(root / "in")
    write_nifti(root / "in" / "labels" / "orphan.nii.gz", _label(), dtype="uint8")
    return _run(root, root / "in", "orphan.nii.gz")


@case(
    "nifti_empty_folder",
    "NIfTI",
    "a folder with nothing medtl reads (only a hidden `.DS_Store`)",
    ERROR,
    r"no NIfTI, NRRD / MetaImage file, DICOM file, dataset\.json or case sheet found under "
    r"this folder \(1 file looked at: \.DS_Store \(hidden file",
)
def _(root):
    (root / "in" / "empty").mkdir()
    (root / "in" / "empty" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return lambda: ingest_outcome(root / "in" / "empty", root / "out" / "ingest", "empty")


# ===================================================================== NRRD / MetaImage


def _itk(path: Path, array: np.ndarray, affine=AFFINE, compress=True, meta=None) -> Path:
    import SimpleITK as sitk

    from medtl.io.itk_files import itk_image

    image = itk_image(array, affine)
    for key, value in (meta or {}).items():
        image.SetMetaData(key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


OBLIQUE = np.array(
    [
        [1.8, -0.52, 0.0, -30.0],
        [0.52, 1.8, 0.0, 12.5],
        [0.0, 0.0, 2.5, 40.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _same_as_the_array(outcome) -> None:
    written = _ingested(outcome, "oblique")
    np.testing.assert_array_equal(np.asarray(written.dataobj), _image(22).astype(np.float32))
    # NRRD keeps the geometry in doubles; medtl's NIfTI stores it as float32: one rounding
    # of each entry, at most half a unit in the last place (2**-24 relative)
    tol = float(np.abs(OBLIQUE).max()) * 2.0**-23
    np.testing.assert_allclose(written.affine, OBLIQUE, rtol=0, atol=tol)
    assert _manifest(outcome).iloc[0]["orientation"] == "".join(nib.aff2axcodes(OBLIQUE))


@case(
    "nrrd_image_accepted",
    "NRRD / MHA",
    "a folder of `.nrrd` images (an oblique volume): read like a NIfTI folder",
    ACCEPTED,
    r"^$",
    check=_same_as_the_array,
)
def _(root):
    _itk(root / "in" / "oblique.nrrd", _image(22), OBLIQUE)
    return _run(root, root / "in", "oblique.nrrd")


def _segments_mapped(outcome) -> None:
    row = _manifest(outcome).set_index("case_id").loc["slicer"]
    values = np.asarray(nib.load(row["label"]).dataobj)
    assert row["label_source"] == "Slicer"
    assert int((values == 1).sum()) == 27 and int((values == 2).sum()) == 8


@case(
    "nrrd_slicer_segmentation",
    "NRRD / MHA",
    "a `.nrrd` image with a 3D Slicer `.seg.nrrd` (segments 'GTV', 'Oedema', 'Couch')",
    ACCEPTED,
    r"segment 'Couch' of slicer\.seg\.nrrd matches no class; not used",
    check=_segments_mapped,
)
def _(root):
    image = _itk(root / "in" / "images" / "slicer.nrrd", _image(23))
    seg = np.zeros(SHAPE, np.uint8)
    seg[1:4, 1:4, 1:4] = 1
    seg[5:7, 5:7, 3:5] = 2
    seg[0, 7, 0] = 3
    meta = {}
    for n, (name, value) in enumerate([("GTV", 1), ("Oedema", 2), ("Couch", 3)]):
        meta |= {f"Segment{n}_Name": name, f"Segment{n}_LabelValue": str(value)}
        meta[f"Segment{n}_Layer"] = "0"
    label = _itk(root / "in" / "labels" / "slicer.seg.nrrd", seg, meta=meta)
    extra = [
        "--classes",
        '{"1": "tumour", "2": "oedema"}',
        "--synonyms",
        '{"tumour": ["GTV"]}',
    ]
    sheet = _sheet_case(root, image, label, case_id="slicer")
    return _run(root, sheet, "images/slicer.nrrd", extra)


def _layers(root: Path, overlap: bool) -> Path:
    layers = np.zeros((*SHAPE, 2), np.uint8)
    layers[1:4, 1:4, 1:4, 0] = 1
    layers[3:6, 3:6, 3:5, 1] = 1 if overlap else 0
    if not overlap:
        layers[5:7, 5:7, 4:6, 1] = 1
    meta = {
        "Segment0_Name": "tumour",
        "Segment0_LabelValue": "1",
        "Segment0_Layer": "0",
        "Segment1_Name": "oedema",
        "Segment1_LabelValue": "1",
        "Segment1_Layer": "1",
    }
    return _itk(root / "in" / "labels" / "layers.seg.nrrd", layers, meta=meta)


@case(
    "nrrd_slicer_layers_overlap",
    "NRRD / MHA",
    "a `.seg.nrrd` with two layers whose segments of different classes overlap",
    SET_ASIDE,
    r"segments 'tumour' and 'oedema' overlap in 1 voxels",
    names="layers.seg.nrrd",
)
def _(root):
    image = _itk(root / "in" / "images" / "img.nrrd", _image(24))
    extra = ["--classes", '{"1": "tumour", "2": "oedema"}']
    return _run(root, _sheet_case(root, image, _layers(root, True)), "layers.seg.nrrd", extra)


def _layers_combined(outcome) -> None:
    row = _manifest(outcome).iloc[-1]
    values = np.asarray(nib.load(row["label"]).dataobj)
    assert int((values == 1).sum()) == 27 and int((values == 2).sum()) == 8


@case(
    "nrrd_slicer_layers_combined",
    "NRRD / MHA",
    "a `.seg.nrrd` with two layers whose segments do not overlap",
    ACCEPTED,
    r"^$",
    check=_layers_combined,
)
def _(root):
    image = _itk(root / "in" / "images" / "img.nrrd", _image(25))
    extra = ["--classes", '{"1": "tumour", "2": "oedema"}']
    return _run(root, _sheet_case(root, image, _layers(root, False)), "layers.seg.nrrd", extra)


@case(
    "nrrd_slicer_no_segment_matches",
    "NRRD / MHA",
    "a `.seg.nrrd` whose segment names match no class",
    SET_ASIDE,
    r"no segment of this 3D Slicer segmentation matches a class \(names found: Segment_1",
    names="unnamed.seg.nrrd",
)
def _(root):
    image = _itk(root / "in" / "images" / "img.nrrd", _image(26))
    meta = {"Segment0_Name": "Segment_1", "Segment0_LabelValue": "1", "Segment0_Layer": "0"}
    label = _itk(root / "in" / "labels" / "unnamed.seg.nrrd", _label(), meta=meta)
    return _run(root, _sheet_case(root, image, label), "unnamed.seg.nrrd", CLASSES)


@case(
    "nrrd_seg_in_image_folder",
    "NRRD / MHA",
    "a `.seg.nrrd` lying among the images of a folder (no `labels/`)",
    SET_ASIDE,
    r"a 3D Slicer segmentation \(\.seg\.nrrd\) outside a labels/ folder",
    names="Segmentation.seg.nrrd",
)
def _(root):
    _itk(root / "in" / "ct.nrrd", _image(27))
    meta = {"Segment0_Name": "tumour", "Segment0_LabelValue": "1", "Segment0_Layer": "0"}
    _itk(root / "in" / "Segmentation.seg.nrrd", _label(), meta=meta)
    return _run(root, root / "in", "Segmentation.seg.nrrd")


@case(
    "nrrd_seg_given_as_image",
    "NRRD / MHA",
    "a sheet row whose image is a 3D Slicer `.seg.nrrd`",
    SET_ASIDE,
    r"a 3D Slicer segmentation given as the image",
    names="drawn.seg.nrrd",
)
def _(root):
    meta = {"Segment0_Name": "tumour", "Segment0_LabelValue": "1", "Segment0_Layer": "0"}
    seg = _itk(root / "in" / "labels" / "drawn.seg.nrrd", _label(), meta=meta)
    return _run(root, _sheet_case(root, seg), "drawn.seg.nrrd", CLASSES)


def _values_equal(case_id: str, expected: np.ndarray):
    def check(outcome) -> None:
        got = np.asarray(_ingested(outcome, case_id).dataobj)
        np.testing.assert_array_equal(got, expected.astype(np.float32))

    return check


@case(
    "nrrd_nhdr_detached_raw",
    "NRRD / MHA",
    "an `.nhdr` header with its detached `.raw` data file",
    ACCEPTED,
    r"^$",
    check=_values_equal("detached", _image(28)),
)
def _(root):
    _itk(root / "in" / "detached.nhdr", _image(28), compress=False)
    return _run(root, root / "in", "detached")


@case(
    "nrrd_nhdr_missing_raw",
    "NRRD / MHA",
    "an `.nhdr` whose detached data file is missing",
    SET_ASIDE,
    r"data file 'lost\.raw', named in its header, is missing",
    names="lost.nhdr",
)
def _(root):
    _itk(root / "in" / "ok.nrrd", _image(29))
    _itk(root / "in" / "lost.nhdr", _image(30), compress=False)
    (root / "in" / "lost.raw").unlink()
    return _run(root, root / "in", "lost.nhdr")


@case(
    "mha_accepted",
    "NRRD / MHA",
    "a MetaImage `.mha`",
    ACCEPTED,
    r"^$",
    check=_values_equal("meta", _image(31)),
)
def _(root):
    _itk(root / "in" / "meta.mha", _image(31))
    return _run(root, root / "in", "meta.mha")


@case(
    "mhd_missing_raw",
    "NRRD / MHA",
    "an `.mhd` whose `.raw` is missing",
    SET_ASIDE,
    r"data file 'gone\.raw', named in its header, is missing",
    names="gone.mhd",
)
def _(root):
    _itk(root / "in" / "ok.mha", _image(32))
    _itk(root / "in" / "gone.mhd", _image(33), compress=False)
    (root / "in" / "gone.raw").unlink()
    return _run(root, root / "in", "gone.mhd")


@case(
    "mha_truncated",
    "NRRD / MHA",
    "an uncompressed `.mha` cut off (ITK would say 'No such file or directory')",
    SET_ASIDE,
    r"truncated or its header is wrong: the header declares 8x8x6 voxels \(768 bytes\)",
    names="cut.mha",
)
def _(root):
    _itk(root / "in" / "ok.mha", _image(34))
    cut = _itk(root / "in" / "cut.mha", _image(35), compress=False)
    cut.write_bytes(cut.read_bytes()[:-100])
    return _run(root, root / "in", "cut.mha")


@case(
    "nrrd_zero_spacing",
    "NRRD / MHA",
    "an `.nrrd` with a zero space direction (zero voxel size)",
    SET_ASIDE,
    r"voxel size 0 mm along axis 1",
    names="flat.nrrd",
)
def _(root):
    _itk(root / "in" / "ok.nrrd", _image(36))
    header = (
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 8 8 6\n"
        "space directions: (2,0,0) (0,0,0) (0,0,2)\nkinds: domain domain domain\n"
        "endian: little\nencoding: raw\nspace origin: (0,0,0)\n\n"
    )
    data = np.transpose(_image(37), (2, 1, 0)).astype("<i2").tobytes()
    (root / "in" / "flat.nrrd").write_bytes(header.encode() + data)
    return _run(root, root / "in", "flat.nrrd")


@case(
    "nrrd_nan_voxel",
    "NRRD / MHA",
    "a float `.nrrd` with a NaN voxel",
    SET_ASIDE,
    r"1 voxel that is not finite \(NaN",
    names="nan.nrrd",
)
def _(root):
    _itk(root / "in" / "ok.nrrd", _image(38))
    data = _image(39).astype(np.float32)
    data[1, 2, 3] = np.nan
    _itk(root / "in" / "nan.nrrd", data)
    return _run(root, root / "in", "nan.nrrd")


@case(
    "nrrd_label_255",
    "NRRD / MHA",
    "an `.nrrd` label map holding 255 with classes {1: tumour}",
    SET_ASIDE,
    r"label values 255 are not classes",
    names="lab.nrrd",
)
def _(root):
    image = _itk(root / "in" / "images" / "img.nrrd", _image(40))
    data = _label()
    data[0, 0, 0] = 255
    label = _itk(root / "in" / "labels" / "lab.nrrd", data)
    return _run(root, _sheet_case(root, image, label), "lab.nrrd", CLASSES)


@case(
    "nrrd_vector_image",
    "NRRD / MHA",
    "an `.nrrd` with 3 components per voxel (channels in one file)",
    SET_ASIDE,
    r"4-D image with 3 volumes",
    names="rgb.nrrd",
)
def _(root):
    _itk(root / "in" / "ok.nrrd", _image(41))
    _itk(root / "in" / "rgb.nrrd", np.stack([_image(i) for i in range(3)], axis=3))
    return _run(root, root / "in", "rgb.nrrd")


# ===================================================================== case sheets


@case(
    "sheet_misspelt_label_column",
    "case sheet",
    "a sheet whose `label` column is spelt `lable` (cases would be silently unlabelled)",
    ERROR,
    r"unknown column 'lable' \(did you mean 'label'\?\).*known columns are image, label, "
    r"patient, case_id",
    names="cases.tsv",
)
def _(root):
    _case_files(root / "in", "a")
    sheet = _sheet(root / "in" / "cases.tsv", [{"image": "images/a.nii.gz", "lable": "x"}])
    return _run(root, sheet, "cases.tsv")


@case(
    "sheet_misspelt_patient_column",
    "case sheet",
    "a sheet with a `patinet` column",
    ERROR,
    r"unknown column 'patinet' \(did you mean 'patient'\?\)",
    names="cases.tsv",
)
def _(root):
    image, label = _case_files(root / "in", "a")
    rows = [{"image": "images/a.nii.gz", "label": "labels/a.nii.gz", "patinet": "P1"}]
    return _run(root, _sheet(root / "in" / "cases.tsv", rows), "cases.tsv")


def _labelled(n: int):
    def check(outcome) -> None:
        manifest = _manifest(outcome)
        assert len(manifest) == n and (manifest["label"] != "").all(), manifest

    return check


@case(
    "sheet_comma_separated",
    "case sheet",
    "a comma-separated `.csv` sheet",
    ACCEPTED,
    r"^$",
    check=_labelled(2),
)
def _(root):
    _case_files(root / "in", "a", seed=1)
    _case_files(root / "in", "b", seed=2)
    rows = [{"image": f"images/{n}.nii.gz", "label": f"labels/{n}.nii.gz"} for n in "ab"]
    return _run(root, _sheet(root / "in" / "cases.csv", rows, sep=","), "cases.csv")


@case(
    "sheet_semicolon_separated",
    "case sheet",
    "a spreadsheet's semicolon-separated CSV",
    ACCEPTED,
    r"^$",
    check=_labelled(2),
)
def _(root):
    _case_files(root / "in", "a", seed=1)
    _case_files(root / "in", "b", seed=2)
    rows = [{"image": f"images/{n}.nii.gz", "label": f"labels/{n}.nii.gz"} for n in "ab"]
    return _run(root, _sheet(root / "in" / "cases.csv", rows, sep=";"), "cases.csv")


@case(
    "sheet_bom_crlf",
    "case sheet",
    "a sheet saved with a UTF-8 byte-order mark and Windows line ends",
    ACCEPTED,
    r"^$",
    check=_labelled(2),
)
def _(root):
    _case_files(root / "in", "a", seed=1)
    _case_files(root / "in", "b", seed=2)
    text = (
        "image\tlabel\r\nimages/a.nii.gz\tlabels/a.nii.gz\r\nimages/b.nii.gz\tlabels/b.nii.gz\r\n"
    )
    (root / "in" / "cases.tsv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    return _run(root, root / "in" / "cases.tsv", "cases.tsv")


@case(
    "sheet_missing_image",
    "case sheet",
    "a sheet row whose image does not exist",
    SET_ASIDE,
    r"image not found \(listed on line 3 of cases\.tsv\)",
    names="nowhere.nii.gz",
)
def _(root):
    sheet = _sheet_case(root, root / "in" / "images" / "nowhere.nii.gz")
    return _run(root, sheet, "nowhere.nii.gz")


@case(
    "sheet_absolute_path",
    "case sheet",
    "a sheet row with absolute paths",
    ACCEPTED,
    r"^$",
    check=_labelled(2),
)
def _(root):
    image, label = _case_files(root / "in", "abs", seed=5)
    sheet = _sheet_case(root, image, label)
    rows = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    rows.loc[1, "image"], rows.loc[1, "label"] = str(image.resolve()), str(label.resolve())
    rows.to_csv(sheet, sep="\t", index=False)
    return _run(root, sheet, "abs.nii.gz")


@case(
    "sheet_header_only",
    "case sheet",
    "a sheet with a header line and no rows",
    ERROR,
    r"the case sheet lists no case",
    names="cases.tsv",
)
def _(root):
    (root / "in" / "cases.tsv").write_text("image\tlabel\n")
    return _run(root, root / "in" / "cases.tsv", "cases.tsv")


@case(
    "sheet_empty_file",
    "case sheet",
    "an empty sheet file (0 bytes)",
    ERROR,
    r"the case sheet is empty",
    names="cases.tsv",
)
def _(root):
    (root / "in" / "cases.tsv").write_bytes(b"")
    return _run(root, root / "in" / "cases.tsv", "cases.tsv")


@case(
    "sheet_same_file_twice",
    "case sheet",
    "a sheet listing the same image file on two rows",
    SET_ASIDE,
    r"line 4 of cases\.tsv lists a file already listed on line 3",
    names="twice.nii.gz",
)
def _(root):
    image, label = _case_files(root / "in", "twice", seed=6)
    sheet = _sheet_case(root, image, label)
    rows = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    rows.loc[2] = ["images/twice.nii.gz", ""]
    rows.to_csv(sheet, sep="\t", index=False)
    return _run(root, sheet, "twice.nii.gz")


@case(
    "sheet_duplicate_case_id",
    "case sheet",
    "two sheet rows with the same case_id",
    SET_ASIDE,
    r"line 3 of cases\.tsv: case_id 'c1' is already used on line 2",
    names="b.nii.gz",
)
def _(root):
    _case_files(root / "in", "a", seed=1)
    _case_files(root / "in", "b", seed=2)
    rows = [
        {"image": f"images/{n}.nii.gz", "label": f"labels/{n}.nii.gz", "case_id": "c1"}
        for n in "ab"
    ]
    return _run(root, _sheet(root / "in" / "cases.tsv", rows), "b.nii.gz")


@case(
    "sheet_empty_image_cell",
    "case sheet",
    "a sheet row with a label but an empty image cell",
    SET_ASIDE,
    r"line 3 of cases\.tsv: the image cell is empty",
    names="cases.tsv",
)
def _(root):
    image, label = _case_files(root / "in", "a")
    sheet = _sheet_case(root, image, label)
    rows = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    rows.loc[1, "image"] = ""
    rows.to_csv(sheet, sep="\t", index=False)
    return _run(root, sheet, "cases.tsv")


@case(
    "sheet_image_not_an_image",
    "case sheet",
    "a sheet row whose image is a `.png`",
    SET_ASIDE,
    r"neither an image file \(\.nii, \.nii\.gz, .*\.nrrd.*\) nor a folder of DICOM files",
    names="photo.png",
)
def _(root):
    photo = root / "in" / "images" / "photo.png"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"\x89PNG\r\n\x1a\n")
    return _run(root, _sheet_case(root, photo), "photo.png")


@case(
    "sheet_nrrd_and_mha_rows",
    "case sheet",
    "a sheet whose rows name `.nrrd` and `.mha` images with `.nrrd` labels",
    ACCEPTED,
    r"^$",
    check=_labelled(3),
)
def _(root):
    rows = [{"image": "images/good.nii.gz", "label": "labels/good.nii.gz"}]
    _case_files(root / "in", "good", seed=1)
    for n, ext in enumerate(("nrrd", "mha")):
        _itk(root / "in" / "images" / f"c{n}.{ext}", _image(42 + n))
        _itk(root / "in" / "labels" / f"c{n}.{ext}", _label())
        rows.append({"image": f"images/c{n}.{ext}", "label": f"labels/c{n}.{ext}"})
    return _run(root, _sheet(root / "in" / "cases.tsv", rows), "c0.nrrd", CLASSES)
