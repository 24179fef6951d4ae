"""Every file of two public DICOM corpora through discovery and loading (medtl.io.dicom).

The corpora are pydicom's own ``data/test_files`` and the ``pydicom-data`` package's
``data_store/data``: odd encodings (big endian, implicit VR, no preamble, deflate), every
compressed transfer syntax pydicom supports, colour and multi-frame images, RT objects, SR,
SEG, DICOMDIR index files, truncated and corrupt files. Nothing may crash: each file ends
as a series member, a label object or a rejection with a reason and a fix, and loading a
series raises nothing but :class:`~medtl.kernel.errors.InputError`.

Run with ``-s`` (or ``-rP``) to see the counts.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medtl.io.dicom import DICOMDIR_REASON, DicomInventory, discover, load_series_checked
from medtl.kernel.errors import InputError


def _corpora() -> dict[str, Path]:
    """The corpus folders installed in this environment (never downloaded)."""
    found = {"pydicom": Path(pydicom.__file__).parent / "data" / "test_files"}
    spec = importlib.util.find_spec("data_store")
    if spec is not None and spec.origin is not None:
        found["pydicom-data"] = Path(spec.origin).parent / "data"
    return {name: path for name, path in found.items() if path.is_dir()}


CORPORA = _corpora()


def _files(root: Path) -> list[Path]:
    """Non-hidden files under ``root``, as discovery walks them."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _account(root: Path, inventory: DicomInventory) -> Counter:
    """Check that every file ends in exactly one place; count where."""
    members = [path for series in inventory.series for path in series.files]
    labels = [label.path for label in inventory.labels]
    rejected = [Path(r.path) for r in inventory.rejected]
    places = members + labels + rejected
    assert len(places) == len(set(places)), "a file ended in two places"
    assert sorted(places) == _files(root)
    for rejection in inventory.rejected:
        assert rejection.reason.strip() and rejection.fix.strip(), rejection
    return Counter(members=len(members), labels=len(labels), rejected=len(rejected))


def _load_all(inventory: DicomInventory) -> tuple[Counter, dict[str, str]]:
    """Load every series; anything but InputError propagates and fails the test."""
    counts: Counter = Counter()
    outcomes: dict[str, str] = {}
    for series in inventory.series:
        key = series.files[0].name
        try:
            volume, set_aside = load_series_checked(series)
        except InputError as err:
            assert err.reason.strip() and err.fix.strip()
            counts["load_rejected"] += 1
            outcomes[key] = err.reason
            continue
        assert volume.array.dtype == np.float32 and volume.array.ndim == 3
        assert np.all(np.isfinite(volume.affine)) and abs(np.linalg.det(volume.affine)) > 0
        assert {Path(r.path) for r in set_aside} <= set(series.files)
        counts["loaded"] += 1
        counts["set_aside"] += len(set_aside)
        outcomes[key] = f"loaded {volume.shape}"
    return counts, outcomes


@pytest.mark.skipif(not CORPORA, reason="no DICOM corpus installed")
@pytest.mark.parametrize("name", sorted(CORPORA))
def test_whole_corpus_discovers_and_loads_without_crashing(name: str) -> None:
    root = CORPORA[name]

    inventory = discover(root, workers=2)
    counts = _account(root, inventory)
    loads, outcomes = _load_all(inventory)

    print(f"\n{name}: {len(_files(root))} files, {len(inventory.series)} series, {dict(counts)}")
    print(f"{name}: {dict(loads)}")
    assert counts["members"] + counts["labels"] + counts["rejected"] == len(_files(root))
    _check_landmarks(root, inventory, outcomes)


def _check_landmarks(root: Path, inventory: DicomInventory, outcomes: dict[str, str]) -> None:
    """Known outcomes for files the corpora are known to hold (checked if present)."""
    labels = {label.path.name: label for label in inventory.labels}
    reasons = {Path(r.path).name: r.reason for r in inventory.rejected}
    if (root / "rtstruct.dcm").exists():  # no preamble: read with force
        assert labels["rtstruct.dcm"].kind == "RTSTRUCT"
        assert labels["rtstruct.dcm"].referenced_series_uids
    if (root / "liver.dcm").exists():
        assert labels["liver.dcm"].kind == "SEG"
    for path in _files(root):
        if path.name.startswith("DICOMDIR"):
            assert reasons[path.name] == DICOMDIR_REASON
    if (root / "eCT_Supplemental.dcm").exists():  # enhanced CT, 2 frames
        assert outcomes["eCT_Supplemental.dcm"] == "loaded (512, 512, 2)"
    if (root / "MR_small_RLE.dcm").exists():
        # MR_small in 8 encodings (RLE, JPEG 2000, JPEG-LS, big endian, ...) share one
        # SeriesInstanceUID and position: all decode to the same pixels, so 7 are set
        # aside as duplicates (different pixels would raise "different images").
        assert "after setting aside 7 localizer or duplicate" in outcomes["MR_small.dcm"]


@pytest.mark.skipif(not CORPORA, reason="no DICOM corpus installed")
@pytest.mark.parametrize("name", sorted(CORPORA))
def test_each_corpus_file_alone_discovers_and_loads_without_crashing(
    name: str, tmp_path: Path
) -> None:
    root = CORPORA[name]
    totals: Counter = Counter()

    for n, path in enumerate(_files(root)):
        folder = tmp_path / f"{n:03d}"
        folder.mkdir()
        shutil.copy(path, folder / path.name)
        inventory = discover(folder, workers=1)
        totals += _account(folder, inventory)
        loads, _ = _load_all(inventory)
        totals += loads

    print(f"\n{name}, each file alone: {dict(totals)}")
    assert totals["members"] + totals["labels"] + totals["rejected"] == len(_files(root))
