"""Provenance: input hashes in run records, and weight digests that equal weights share."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from medtl.provenance import combined_digest, weights_digest, write_run_record


def test_weights_digest_ignores_file_bytes_but_not_values(tmp_path: Path) -> None:
    state = {"format": "medtl", "state_dict": {"a": torch.arange(6.0).reshape(2, 3)}}
    torch.save(state, tmp_path / "one.pt")
    torch.save(state, tmp_path / "two.pt")
    # torch.save writes the file name and a random id: the bytes differ ...
    assert (tmp_path / "one.pt").read_bytes() != (tmp_path / "two.pt").read_bytes()
    # ... the tensors do not
    assert weights_digest(tmp_path / "one.pt") == weights_digest(tmp_path / "two.pt")
    state["state_dict"]["a"][0, 0] = 0.5
    torch.save(state, tmp_path / "three.pt")
    assert weights_digest(tmp_path / "three.pt") != weights_digest(tmp_path / "one.pt")


def test_run_record_hashes_inputs_by_kind(tmp_path: Path) -> None:
    (tmp_path / "a.npz").write_bytes(b"case a")
    (tmp_path / "b.npz").write_bytes(b"case b")
    record = write_run_record(
        tmp_path / "run.json",
        {"seed": 1},
        inputs={"cases": [tmp_path / "b.npz", tmp_path / "a.npz"], "weights": []},
        seed=1,
    )
    files = record["sha256"]["cases"]["files"]
    assert files == {
        "a.npz": hashlib.sha256(b"case a").hexdigest(),
        "b.npz": hashlib.sha256(b"case b").hexdigest(),
    }
    assert record["sha256"]["cases"]["combined"] == combined_digest(files)
    assert record["sha256"]["weights"]["files"] == {}
    assert json.loads((tmp_path / "run.json").read_text())["sha256"] == record["sha256"]
