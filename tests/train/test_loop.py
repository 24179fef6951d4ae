"""Tests for the training loop (medtl.train.loop) and its data (medtl.train.data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medtl.config import AugmentConfig, ModelConfig, TrainConfig
from medtl.models.networks import build_network, count_parameters, get_architecture
from medtl.preprocess.case import PreprocessedCase, save_case
from medtl.train.data import PatchStream, load_training_cases
from medtl.train.loop import RunSpec, train_run

MODEL = ModelConfig(features=(4, 4, 8, 8, 16, 4))
# basicunet needs one side of 32 or more (a 16^3 patch leaves a single voxel at its
# deepest level); the first two sides are equal so that rotate90 keeps the patch shape.
PATCH = (16, 16, 32)
SHAPE = (20, 20, 36)
CPU = torch.device("cpu")
ARCH = get_architecture("basicunet")


def _item(seed: int, shape: tuple[int, int, int] = SHAPE) -> dict:
    """A case as load_training_cases returns it: a bright box on noise."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.int64)
    label[4 + seed : 12 + seed, 5:14, 6:20] = 1
    image = (2.0 * label + rng.normal(0.0, 0.5, shape)).astype(np.float32)
    return {
        "image": torch.from_numpy(image[None]),
        "label": torch.from_numpy(label[None]),
        "case": f"case{seed}",
    }


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return [_item(0), _item(1)]


def _spec(steps: int = 4, freeze: bool = False, seed: int = 0) -> RunSpec:
    return RunSpec(
        model=MODEL,
        train=TrainConfig(steps=steps, batch_size=2, patch_size=PATCH, val_every=2),
        num_classes=2,
        classes={"1": "box"},
        seed=seed,
        freeze_encoder=freeze,
        tags={"arm": "test", "fold": 0},
    )


def _curves(out: Path) -> list[dict[str, str]]:
    with (out / "curves.csv").open() as f:
        return list(csv.DictReader(f))


def _run(spec: RunSpec, items: list[dict], out: Path, fingerprint: str = "fp", init=None) -> dict:
    return train_run(
        spec, items, items[:1], out, CPU, init=init, progress=False, fingerprint=fingerprint
    )


# ------------------------------------------------------------------ loop


@pytest.fixture(scope="module")
def tiny_run(items: list[dict], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One 4-step run, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    return out, _run(_spec(), items, out)


def test_tiny_run_writes_outputs(tiny_run: tuple[Path, dict]) -> None:
    out, summary = tiny_run
    assert {"best.pt", "last.pt", "curves.csv", "summary.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left

    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert best["format"] == "medtl"
    assert best["num_classes"] == 2
    assert best["classes"] == {"1": "box"}
    assert best["patch_size"] == list(PATCH)
    assert best["model"]["features"] == list(MODEL.features)
    assert best["tags"] == {"arm": "test", "fold": 0}
    net = build_network(MODEL, 1, 2)
    net.load_state_dict(best["state_dict"])  # strict: every key and shape matches

    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert last["fingerprint"] == "fp"
    assert last["step"] == 4

    rows = _curves(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [r["val_dice"] != "" for r in rows] == [False, True, False, True]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    vals = {int(r["step"]): float(r["val_dice"]) for r in rows if r["val_dice"]}
    assert all(0.0 <= v <= 1.0 for v in vals.values())
    assert float(rows[0]["lr"]) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)) * 2e-3)
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-12)  # cosine to zero

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["steps"] == summary["steps"] == 4
    assert on_disk["best_step"] in vals
    assert on_disk["best_val_dice"] == pytest.approx(max(vals.values()))
    assert best["step"] == on_disk["best_step"]
    assert best["val_dice"] == pytest.approx(on_disk["best_val_dice"])
    assert on_disk["parameters"] == count_parameters(net, ARCH)
    assert on_disk["frozen_parameters"] == 0


def test_same_seed_same_curves(
    items: list[dict], tiny_run: tuple[Path, dict], tmp_path: Path
) -> None:
    first, _ = tiny_run
    _run(_spec(), items, tmp_path / "again")
    a, b = _curves(first), _curves(tmp_path / "again")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["val_dice"] for r in a] == [r["val_dice"] for r in b]
    wa = torch.load(first / "best.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "again" / "best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the same file to the byte: the provenance's SHA-256 of a model depends on it alone
    assert (first / "best.pt").read_bytes() == (tmp_path / "again" / "best.pt").read_bytes()


def test_other_seed_other_curves(
    items: list[dict], tiny_run: tuple[Path, dict], tmp_path: Path
) -> None:
    # the losses of the first two steps do not depend on the schedule's length
    _run(_spec(steps=2, seed=5), items, tmp_path / "other")
    seed0 = [r["loss"] for r in _curves(tiny_run[0])][:2]
    assert [r["loss"] for r in _curves(tmp_path / "other")] != seed0


def test_resume_with_same_fingerprint(items: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(_spec(steps=2), items, out, fingerprint="same")
    first = _curves(out)
    assert len(first) == 2
    assert float(first[1]["lr"]) == pytest.approx(0.0, abs=1e-12)  # end of a 2-step schedule

    summary = _run(_spec(steps=4), items, out, fingerprint="same")
    rows = _curves(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[:2] == first  # the first two steps were kept, not rerun
    assert summary["steps"] == 4
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 4


def test_other_fingerprint_starts_over(
    items: list[dict], tiny_run: tuple[Path, dict], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    _run(_spec(steps=2), items, out, fingerprint="old")
    first = _curves(out)
    _run(_spec(steps=4), items, out, fingerprint="new")
    rows = _curves(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[1]["elapsed_s"] != first[1]["elapsed_s"]
    # a 4-step schedule from step 1: at step 2 the lr is half the base rate, not zero
    assert float(rows[1]["lr"]) == pytest.approx(1e-3)
    # the same losses as a fresh run of the same settings
    assert [r["loss"] for r in rows] == [r["loss"] for r in _curves(tiny_run[0])]
    assert torch.load(out / "last.pt", weights_only=True)["fingerprint"] == "new"


def test_freeze_encoder_keeps_encoder_weights(items: list[dict], tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_network(MODEL, 1, 2)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    summary = _run(_spec(steps=2, freeze=True), items, tmp_path / "run", init=net)
    assert summary["frozen_parameters"] == count_parameters(net, ARCH)["encoder"]
    after = net.state_dict()
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["state_dict"]
    changed = set()
    for key, value in before.items():
        if ARCH.part_of(key) == "encoder":
            assert torch.equal(after[key], value), key
            assert torch.equal(best[key], value), key
        elif not torch.equal(after[key], value):
            changed.add(key)
    assert any(k.startswith("final_conv.") for k in changed)
    assert any(k.startswith("upcat_") for k in changed)


def test_unfrozen_run_changes_encoder(items: list[dict], tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_network(MODEL, 1, 2)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    _run(_spec(steps=2), items, tmp_path / "run", init=net)
    after = net.state_dict()
    assert any(
        not torch.equal(after[k], v) for k, v in before.items() if ARCH.part_of(k) == "encoder"
    )


# ------------------------------------------------------------------ data


def _save(path: Path, image: np.ndarray, label: np.ndarray | None) -> Path:
    save_case(path, PreprocessedCase(image[None].astype(np.float32), label, {"k": 1}))
    return path


def test_load_training_cases(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    label = np.zeros((6, 5, 4), np.uint8)
    label[1:3, 1:3, 1:3] = 2
    label[4, 4, 3] = 1
    p = _save(tmp_path / "caseA.npz", image, label)
    (item,) = load_training_cases([p])
    assert item["case"] == "caseA"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 6, 5, 4)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (1, 6, 5, 4)
    np.testing.assert_array_equal(item["image"][0].numpy(), image)
    np.testing.assert_array_equal(item["label"][0].numpy(), label)
    (mapped,) = load_training_cases([p], label_map={2: 1})
    expected = np.where(label == 2, 1, 0)  # 2 -> 1, unmapped values -> background
    np.testing.assert_array_equal(mapped["label"][0].numpy(), expected)


def test_load_training_cases_needs_label(tmp_path: Path) -> None:
    p = _save(tmp_path / "nolabel.npz", np.zeros((4, 4, 4), np.float32), None)
    with pytest.raises(ValueError, match="needs a label"):
        load_training_cases([p])


def test_patch_stream_shapes_and_reproducibility(items: list[dict]) -> None:
    aug = AugmentConfig()

    def first(seed: int, n: int = 3) -> list[dict]:
        stream = PatchStream(items, PATCH, 2, aug, pos_fraction=1.0, seed=seed)
        return [next(stream) for _ in range(n)]

    a, b, c = first(0), first(0), first(1)
    for batch in a:
        assert batch["image"].shape == (2, 1, *PATCH)
        assert batch["label"].shape == (2, 1, *PATCH)
        # pos_fraction 1: every patch is centred on foreground
        assert all(int(batch["label"][i].sum()) > 0 for i in range(2))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(torch.as_tensor(x["image"]), torch.as_tensor(y["image"]))
        assert torch.equal(torch.as_tensor(x["label"]), torch.as_tensor(y["label"]))
    assert any(
        not torch.equal(torch.as_tensor(x["image"]), torch.as_tensor(z["image"]))
        for x, z in zip(a, c, strict=True)
    )


def test_patch_stream_pads_small_cases() -> None:
    small = [_item(0, shape=(10, 12, 20))]
    batch = next(PatchStream(small, PATCH, 2, AugmentConfig(), 0.5, seed=0))
    assert batch["image"].shape == (2, 1, *PATCH)


# ------------------------------------------------------------------ regressions


def test_resumed_run_reports_best_step(items: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _run(_spec(steps=2), items, out)
    again = _run(_spec(steps=2), items, out)  # nothing left to do: resumes at the end
    assert again["best_step"] == first["best_step"] == 2


def test_batches_of_non_square_patch(items: list[dict]) -> None:
    patch = (32, 16, 16)
    stream = PatchStream(items, patch, 2, AugmentConfig(), pos_fraction=0.5, seed=0)
    for _ in range(4):
        assert next(stream)["image"].shape == (2, 1, *patch)
