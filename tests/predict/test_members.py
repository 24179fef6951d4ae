"""Which models `medtl predict` averages: every fold of every seed of the arm."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtl.kernel.errors import InputError
from medtl.layout import run_dir
from medtl.predict.run import default_arm, describe_members, ensemble_members


def _results(root: Path) -> Path:
    for arm, seeds in (("scratch", (1, 2, 3)), ("frozen", (1,))):
        for seed in seeds:
            for fold in (0, 1):
                path = run_dir(root, arm, seed, fold) / "best.pt"
                path.parent.mkdir(parents=True)
                path.write_bytes(b"x")
    return root


def test_every_fold_of_every_seed_is_a_member(tmp_path):
    results = _results(tmp_path)
    members = ensemble_members(results, "scratch")
    assert [(r.seed, r.fold) for r in members] == [(s, f) for s in (1, 2, 3) for f in (0, 1)]
    assert describe_members(members) == "6 models (2 folds × 3 seeds)"
    assert describe_members(ensemble_members(results, "frozen")) == "2 models (2 folds × 1 seed)"


def test_seeds_can_be_chosen(tmp_path):
    members = ensemble_members(_results(tmp_path), "scratch", seeds=[3, 1])
    assert sorted({r.seed for r in members}) == [1, 3] and len(members) == 4
    with pytest.raises(InputError, match=r"no model of seed 7 \(its seeds: 1, 2, 3\)"):
        ensemble_members(tmp_path, "scratch", seeds=[7])


def test_an_arm_without_models_names_the_arms_there_are(tmp_path):
    with pytest.raises(InputError, match=r"no trained models for arm 'nope' \(arms found: "):
        ensemble_members(_results(tmp_path), "nope")


def test_without_report_several_arms_need_arm(tmp_path):
    with pytest.raises(InputError, match=r"several arms were trained \(frozen, scratch\)"):
        default_arm(_results(tmp_path))
