"""The shift study's harness (studies/shift_study.py): its configs, numbers, table and docs.

The study itself (whole demo runs) is `make study-shift`; here its parts run on canned
results, and once (slow) on the micro config at two strengths.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import shift_study
import yaml

from tests.support.workflow import MICRO


def _write_run(folder: Path, gain: float, ci: tuple[float, float], mmd2: float) -> None:
    (folder / "results" / "report").mkdir(parents=True)
    (folder / "results" / "shift").mkdir(parents=True)
    versus = {
        "arm": "finetune",
        "reference": "scratch",
        "metric": "dice",
        "n": 20,
        "mean_diff": gain,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "p_value": 0.01,
        "seeds": 2,
    }
    summary = {
        "versus_reference": [{**versus, "metric": "nsd"}, versus],
        "mean_dice": {"scratch": 0.7, "finetune": 0.7 + gain},
        "runs": {
            "pooled_noise_floor": {"aa_difference": 0.05},
            "per_seed": [
                {"arm": arm, "seed": seed, "mean_dice": 0.7 + (arm == "finetune") * (gain + d)}
                for arm in ("scratch", "finetune")
                for seed, d in ((1, -0.01), (2, 0.01))
            ],
        },
    }
    (folder / "results" / "report" / "summary.json").write_text(json.dumps(summary))
    record = {
        "encoder": {"mmd2": mmd2, "p_value": 0.001, "flagged_cases": 3},
        "intensity": {"wasserstein": 0.1},
        "warnings": ["w"],
    }
    (folder / "results" / "shift" / "shift.json").write_text(json.dumps(record))


def test_each_strength_gets_the_demo_config_with_the_studys_changes():
    changes = yaml.safe_load((shift_study.HERE / "config_shift.yaml").read_text())
    cfg = shift_study.run_config(changes, 0.5)
    demo = yaml.safe_load((shift_study.ROOT / "config" / "config.yaml").read_text())
    assert cfg["dataset"]["demo"]["shift"] == 0.5
    assert cfg["dataset"]["demo"]["seed"] == demo["dataset"]["demo"]["seed"]
    assert set(cfg["arms"]) == {"scratch", "finetune"}  # the arms are replaced, not merged
    assert cfg["seeds"] == [1, 2] and cfg["label_fractions"] == []
    assert cfg["train"] == demo["train"]


def test_strengths_are_checked():
    assert shift_study.parse_args(["--strengths", "0,1,2"]).strengths == [0.0, 1.0, 2.0]
    for bad in ("1", "0,3", "a,b"):
        with pytest.raises(SystemExit):
            shift_study.parse_args(["--strengths", bad])


def test_numbers_table_and_docs_come_from_the_runs(tmp_path):
    rows = []
    for strength, gain, ci, mmd2 in (
        (0.0, 0.12, (0.05, 0.2), 0.01),
        (2.0, 0.01, (-0.05, 0.07), 0.4),
    ):
        folder = shift_study.run_folder(tmp_path, strength)
        _write_run(folder, gain, ci, mmd2)
        rows.append(shift_study.collect(folder, strength))
    assert rows[0]["gain"] == 0.12 and rows[1]["mmd2"] == 0.4  # the Dice row, not NSD's
    assert rows[0]["seed_gains"] == pytest.approx({"1": 0.11, "2": 0.13})
    assert [shift_study.verdict(r) for r in rows] == ["helps", "cannot tell"]
    meta = {"date": "d", "commit": "c", "machine": "m", "minutes": 1, "seeds": "1, 2", "cases": 20}
    table = shift_study.markdown(rows, meta)
    assert (
        "| 0 | 0.010 (0.001) |" in table and "+0.120 (+0.050 to +0.200) | +0.110 / +0.130" in table
    )
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{shift_study.START}\nold\n{shift_study.END}\nafter\n")
    shift_study.write_doc(doc, table)
    text = doc.read_text()
    assert "old" not in text and table in text and text.endswith("after\n")
    shift_study.figure(rows, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_docs_hold_the_markers():
    text = shift_study.DOC.read_text()
    assert text.index(shift_study.START) < text.index(shift_study.END)


@pytest.mark.slow
def test_the_study_runs_on_the_micro_config(tmp_path):
    micro = yaml.safe_load(MICRO.read_text())
    changes = {k: v for k, v in micro.items() if k != "dataset"}
    changes["dataset"] = {"demo": micro["dataset"]["demo"]}
    (tmp_path / "changes.yaml").write_text(yaml.safe_dump(changes))
    args = ["--strengths", "0,2", "--config", str(tmp_path / "changes.yaml")]
    assert shift_study.main([*args, "--work", str(tmp_path / "w"), "--no-doc", "--cores", "2"]) == 0
    rows = json.loads((tmp_path / "w" / "results.json").read_text())["rows"]
    assert [r["strength"] for r in rows] == [0.0, 2.0]
    assert all(r["mmd2"] is not None and r["ci_low"] <= r["gain"] <= r["ci_high"] for r in rows)
