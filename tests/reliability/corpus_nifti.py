"""Corpus entries: NIfTI images and labels, NRRD / MHA, case sheets."""

from __future__ import annotations

from corpus import SET_ASIDE, case, ingest_outcome, write_nifti


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
