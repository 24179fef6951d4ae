"""One case of a manifest, preprocessed into one file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medtl.kernel.errors import InputError
from medtl.preprocess.single import preprocess_manifest_case


def test_a_case_missing_from_the_manifest_names_the_manifest(tmp_path: Path) -> None:
    manifest = pd.DataFrame({"case_id": ["a"], "image": ["a.nii.gz"], "label": [""]})
    with pytest.raises(InputError, match="case 'b' not in the manifest"):
        preprocess_manifest_case(manifest, "b", None, tmp_path / "b.npz", "m.tsv")
