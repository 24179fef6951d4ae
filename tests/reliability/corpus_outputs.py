"""Corpus entries: where the exporting commands write, and what two runs leave behind."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from tests.reliability.corpus import (
    ACCEPTED,
    ERROR,
    Outcome,
    case,
    cli_outcome,
    ingest_outcome,
    write_nifti,
)
from tests.reliability.corpus_predict import finished_run
from tests.support import dicom_builders as build


def _cases(folder, names=("case_a", "case_b")):
    """Labelled cases ``images/<name>.nii.gz`` + ``labels/<name>.nii.gz``, each image with
    its own constant value (so a mix-up shows)."""
    for value, name in enumerate(names, start=1):
        image = np.full((8, 8, 6), 10.0 * value, np.float32)
        image[0, 0, 0] = 0.0  # not a blank image
        label = np.zeros((8, 8, 6), np.uint8)
        label[2:5, 2:5, 1:4] = 1
        write_nifti(folder / "images" / f"{name}.nii.gz", image, dtype="float32")
        write_nifti(folder / "labels" / f"{name}.nii.gz", label, dtype="uint8")


def _each_case_holds_its_own_pixels(outcome: Outcome) -> None:
    """Case ``case_b`` is the file ``case_a.nii.gz`` (value 10), and the other way round."""
    manifest = outcome.details["manifest"].set_index("case_id")
    for case_id, value in (("case_b", 10.0), ("case_a", 20.0)):
        data = np.asarray(nib.load(manifest.loc[case_id, "image"]).dataobj)
        assert data.max() == value, (case_id, data.max())


@case(
    "ingest_case_ids_crossed_with_file_names",
    "outputs",
    "a sheet naming `case_a.nii.gz` case `case_b` and `case_b.nii.gz` case `case_a`",
    ACCEPTED,
    r"^$",
    check=_each_case_holds_its_own_pixels,
)
def _(root):
    _cases(root / "in")
    (root / "in" / "cases.tsv").write_text(
        "image\tlabel\tcase_id\n"
        "images/case_a.nii.gz\tlabels/case_a.nii.gz\tcase_b\n"
        "images/case_b.nii.gz\tlabels/case_b.nii.gz\tcase_a\n"
    )
    return lambda: ingest_outcome(root / "in" / "cases.tsv", root / "out" / "ingest", "none")


def _only_the_new_conversion(outcome: Outcome) -> None:
    names = sorted(p.name for p in outcome.output.iterdir())
    assert "old.nii.gz" not in names, names
    assert len([n for n in names if n.endswith(".nii.gz")]) == 1, names
    assert "stale" not in (outcome.output / "rejected.tsv").read_text()


@case(
    "convert_into_an_older_conversion",
    "outputs",
    "`medtl convert` into a folder holding an earlier conversion, with its `rejected.tsv`",
    ACCEPTED,
    r"convert: 1 series",
    check=_only_the_new_conversion,
)
def _(root):
    build.write_series_at(root / "in" / "dicom" / "series", [0.0, 2.0, 4.0, 6.0])
    old = root / "out" / "nifti"
    old.mkdir()
    (old / "series.tsv").write_text("file\nold.nii.gz\n")
    (old / "rejected.tsv").write_text("path\treason\tfix\nx.dcm\tstale\tnone\n")
    (old / "old.nii.gz").write_bytes(b"an older conversion")

    def run() -> Outcome:
        outcome = cli_outcome(["convert", root / "in" / "dicom", "--out", old, "--quiet"])
        outcome.output = old
        return outcome

    return run


@case(
    "export_nnunet_over_its_own_source",
    "outputs",
    "`medtl export-nnunet --overwrite` onto the nnU-Net dataset the cases were ingested from",
    ERROR,
    r"the dataset folder contains the input .*never writes over or inside its input",
    names="Dataset501_Liver",
)
def _(root):
    raw = root / "in" / "nnUNet_raw" / "Dataset501_Liver"
    _cases(raw)
    manifest = root / "in" / "manifest.tsv"
    manifest.write_text(
        "case_id\timage\tlabel\n"
        + "".join(
            f"{n}\t{raw / 'images' / (n + '.nii.gz')}\t{raw / 'labels' / (n + '.nii.gz')}\n"
            for n in ("case_a", "case_b")
        )
    )
    return lambda: cli_outcome(
        ["export-nnunet", "--manifest", manifest, "--out", root / "in" / "nnUNet_raw"]
        + ["--dataset-id", "501", "--name", "Liver", "--overwrite"]
        + ["--classes", '{"1": "tumour"}']
    )


@case(
    "export_bundle_inside_the_run",
    "outputs",
    "`medtl export-bundle --out results/bundle`, inside the run it exports",
    ERROR,
    r"--out lies inside the input folder",
    names="bundle",
)
def _(root):
    results = finished_run(root / "in" / "results")
    return lambda: cli_outcome(
        ["export-bundle", "--model", results, "--arm", "finetune", "--out", results / "bundle"]
    )


@case(
    "ingest_twice_into_one_folder",
    "outputs",
    "a second `medtl ingest` into the folder of a first one that had set a file aside",
    ACCEPTED,
    r"^$",
)
def _(root):
    _cases(root / "in")
    out = root / "out" / "ingest"
    (root / "in" / "broken.nii.gz").write_text("not an image")
    first = ingest_outcome(root / "in", out, "broken.nii.gz")
    assert first.kind == "set aside", first
    (root / "in" / "broken.nii.gz").unlink()
    return lambda: ingest_outcome(root / "in", out, "broken.nii.gz")
