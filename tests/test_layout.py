"""Where the training runs' files live: one layout for the library and the rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtl import layout
from medtl.config import training_seeds
from medtl.kernel.errors import ConfigError
from medtl.layout import evaluation_file, predictions_dir, run_dir, trained_runs


def test_paths_of_one_training_run():
    assert run_dir("results", "scratch", 2, 0) == Path("results/train/scratch/seed2/fold0")
    assert predictions_dir("r", "a", 1, 3) == Path("r/predictions/a/seed1/fold3")
    assert evaluation_file("r", "a", 1, 3) == Path("r/evaluation/a/seed1/fold3.csv")


def test_the_rules_get_wildcard_patterns():
    pattern = run_dir("results", "{arm}", "{seed}", "{fold}") / "best.pt"
    assert pattern.as_posix() == "results/train/{arm}/seed{seed}/fold{fold}/best.pt"


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_trained_runs_finds_seeded_and_older_runs(tmp_path):
    for seed in (2, 10):
        for fold in (1, 0):
            _touch(run_dir(tmp_path, "scratch", seed, fold) / "best.pt")
    old = _touch(tmp_path / "train" / "frozen" / "fold0" / "best.pt")
    _touch(tmp_path / "train" / "scratch" / "seed3" / "fold0" / "curves.csv")  # unfinished
    _touch(tmp_path / "train" / "scratch" / "seedx" / "fold0" / "best.pt")  # not a run
    runs = trained_runs(tmp_path)
    assert [(r.arm, r.seed, r.fold) for r in runs] == [
        ("frozen", None, 0),
        ("scratch", 2, 0),
        ("scratch", 2, 1),
        ("scratch", 10, 0),
        ("scratch", 10, 1),
    ]
    assert runs[0].path == old
    assert [r.seed for r in trained_runs(tmp_path, "scratch")] == [2, 2, 10, 10]
    assert trained_runs(tmp_path, "nope") == []


def test_training_seeds_per_arm():
    config = {"seed": 5, "seeds": [3, 1, 2], "arms": {"a": {}, "b": {"repeats": 2}}}
    assert training_seeds(config) == {"a": [3, 1, 2], "b": [3, 1]}
    assert training_seeds({"seed": 5, "seeds": None, "arms": {"a": {}}}) == {"a": [5]}


def test_training_seeds_refuses_repeats_and_duplicates():
    with pytest.raises(ConfigError, match=r"'arms.b.repeats': got 4, but 'seeds' lists 3"):
        training_seeds({"seeds": [1, 2, 3], "arms": {"b": {"repeats": 4}}})
    with pytest.raises(ConfigError, match=r"seed 2 is listed twice"):
        training_seeds({"seeds": [1, 2, 2], "arms": {"a": {}}})


def test_a_new_axis_changes_every_path_from_one_place(monkeypatch):
    """A data-set axis, added as docs/architecture.md describes: paths and the rules'
    wildcards follow RUN_AXES, and the run-folder pattern reads the new axis back."""
    dataset = layout.Axis("dataset", "data-{}", r"[a-z]+")
    monkeypatch.setattr(layout, "RUN_AXES", (dataset, *layout.RUN_AXES))
    path = layout.run_path("evaluation", "r", dataset="liver", arm="a", seed=1, fold=0)
    assert path == Path("r/evaluation/data-liver/a/seed1/fold0.csv")
    assert layout.wildcards()["dataset"] == "{dataset}"
    rule_path = layout.run_path("train", "results", **layout.wildcards())
    assert rule_path.as_posix() == "results/train/data-{dataset}/{arm}/seed{seed}/fold{fold}"
    match = layout._run_folder().match("data-liver/scratch/seed2/fold1")
    assert match.groupdict() == {"dataset": "liver", "arm": "scratch", "seed": "2", "fold": "1"}
    values = {axis.name: axis.value(match[axis.name]) for axis in layout.RUN_AXES}
    assert values == {"dataset": "liver", "arm": "scratch", "seed": 2, "fold": 1}
    with pytest.raises(ValueError, match=r"missing \['dataset'\]"):
        layout.run_path("train", "r", arm="a", seed=1, fold=0)
