"""Self-supervised pretraining: the pretext tasks and the checkpoint the arms load."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from medtl.config import ModelConfig, parse_section, validate_config
from medtl.kernel.errors import ConfigError, InputError
from medtl.models.networks import build_network, get_architecture
from medtl.models.transfer import load_encoder
from medtl.train.pretext import mask_cubes, rotate_batch
from medtl.train.ssl import SSLConfig, pretrain_ssl

MODEL = ModelConfig(features=(4, 4, 8, 8, 16, 4))


def _images(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 36, 36, 18, generator=g) for _ in range(n)]


def test_mask_cubes_blanks_only_the_mask_and_leaves_the_input() -> None:
    x = torch.randn(2, 1, 16, 16, 8) + 5.0
    masked, mask = mask_cubes(x, 3, 0.25, torch.Generator().manual_seed(1))
    assert (masked[mask] == 0).all()
    assert torch.equal(masked[~mask], x[~mask])
    assert 0 < mask.float().mean() < 0.5
    assert (x != 0).all()  # the input is not modified


def test_rotate_batch_turns_each_patch_by_its_label() -> None:
    x = torch.arange(2 * 1 * 4 * 4 * 2, dtype=torch.float32).reshape(2, 1, 4, 4, 2)
    out, ks = rotate_batch(x, torch.Generator().manual_seed(3))
    for i in range(2):
        assert torch.equal(out[i], torch.rot90(x[i], int(ks[i]), dims=(1, 2)))


def test_pretrain_ssl_writes_a_checkpoint_whose_encoder_loads(tmp_path: Path) -> None:
    cfg = SSLConfig(steps=4, batch_size=2, patch_size=(32, 32, 16))
    summary = pretrain_ssl(
        _images(), MODEL, cfg, tmp_path, seed=0, device=torch.device("cpu"), progress=False
    )
    assert summary["steps"] == 4
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert list(curves["step"]) == [1, 2, 3, 4]
    assert {"inpaint", "rotation"} <= set(curves.columns)
    target = build_network(MODEL, 1, 2)
    report = load_encoder(target, get_architecture("basicunet"), tmp_path / "checkpoint.pt")
    assert report.fraction_loaded == 1.0
    assert report.missing == [] and report.shape_mismatch == []


def test_pretrain_ssl_is_reproducible(tmp_path: Path) -> None:
    cfg = SSLConfig(steps=3, batch_size=2, patch_size=(32, 32, 16))
    for run in ("a", "b"):
        pretrain_ssl(
            _images(),
            MODEL,
            cfg,
            tmp_path / run,
            seed=5,
            device=torch.device("cpu"),
            progress=False,
        )
    a = pd.read_csv(tmp_path / "a" / "curves.csv")["loss"]
    b = pd.read_csv(tmp_path / "b" / "curves.csv")["loss"]
    pd.testing.assert_series_equal(a, b)


def test_pretrain_ssl_refuses_non_square_patches(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="equal x and y"):
        pretrain_ssl(
            _images(1),
            MODEL,
            SSLConfig(patch_size=(32, 16, 16)),
            tmp_path,
            0,
            torch.device("cpu"),
            progress=False,
        )


def test_schema_defaults_are_the_dataclass_defaults() -> None:
    schema = Path(__file__).resolve().parents[2] / "pipeline" / "schemas" / "config.schema.yaml"
    section = dict(validate_config({}, schema)["pretrain_ssl"])
    section.pop("use_source")  # the workflow's choice of images, not a schedule setting
    assert parse_section(SSLConfig, section, "pretrain_ssl") == SSLConfig()


def test_pretrain_ssl_refuses_a_warmup_as_long_as_the_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pretrain_ssl\.warmup_steps': got 4; expected 0 to 3"):
        pretrain_ssl(
            _images(1),
            MODEL,
            SSLConfig(steps=4, warmup_steps=4),
            tmp_path,
            0,
            torch.device("cpu"),
            progress=False,
        )
