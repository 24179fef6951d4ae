"""nnssl Primus (OpenMind PrimusM MAE) checkpoints as pretrained encoders of ``primus``.

The checkpoints are built in nnssl's published layout (tests/models/weight_layouts.py:
EvaMAE's names, BaseEvaMAETrainer's plan) with random weights. nnssl's plan names a
preset (``PrimusM``) and no width, so the loading tests shrink the M preset to
embed_dim 48, depth 2, 2 heads (the code reads the preset table at run time); the
full-size PrimusM layout is checked key for key without a forward pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medtl.config import ModelConfig
from medtl.models import primus_sizes
from medtl.models.networks import build_network, get_architecture
from medtl.models.nnunet_networks import canonical_state
from medtl.models.stages import encoder_stages
from medtl.models.transfer import (
    WeightsError,
    check_checkpoint,
    load_pretrained,
    plan_transfer,
    refuse_mismatch,
)
from medtl.models.weight_formats import from_nnssl
from medtl.models.weights import Weights
from tests.models.weight_layouts import (
    EvaMAELayout,
    nnssl_checkpoint,
    nnssl_checkpoint_dict,
    nnssl_primus_plan,
)

ARCH = get_architecture("primus")
PRIMUS = ModelConfig(name="primus", preset="M")
PATCH = (96, 96, 64)  # 12 × 12 × 8 tokens; pretraining: 160³, 20 × 20 × 20
TRAINER = "BaseEvaMAETrainer_BS8_1000ep"


@pytest.fixture
def tiny_m(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(primus_sizes.PRIMUS_PRESETS, "M", (48, 2, 2))


def _ramp_source(seed: int = 0) -> EvaMAELayout:
    """The pretraining network with a positional embedding that is a ramp over the grid:
    channel c holds (c + 1) · (x + 2y − z) at token (x, y, z)."""
    torch.manual_seed(seed)
    source = EvaMAELayout(48, 2, 2)
    x, y, z = torch.meshgrid(*(torch.arange(20.0) for _ in range(3)), indexing="ij")
    ramp = (x + 2 * y - z).reshape(1, -1, 1) * torch.arange(1.0, 49.0)
    with torch.no_grad():
        source.eva.pos_embed.copy_(ramp)
    return source


def _checkpoint(tmp_path: Path) -> tuple[Path, EvaMAELayout]:
    source = _ramp_source()
    return nnssl_checkpoint(tmp_path / "ckpt", source, nnssl_primus_plan(), trainer=TRAINER), source


@pytest.mark.usefixtures("tiny_m")
def test_primus_m_loads_whole_encoder_adapts_channels_and_positional_embedding(
    tmp_path: Path,
) -> None:
    path, source = _checkpoint(tmp_path)
    net = build_network(PRIMUS, 2, 3, PATCH)
    report = load_pretrained(net, ARCH, path)
    encoder = [k for k in canonical_state(net) if ARCH.part_of(k) == "encoder"]
    assert report.format == "nnssl" and report.fraction_loaded == 1.0 and not report.missing
    assert sorted(report.loaded) == sorted(encoder) and report.unused_tensors == 0
    assert report.adapted == [
        {"key": "down_projection.proj.weight", "from": 1, "to": 2, "how": "repeat/N"},
        {"key": "eva.pos_embed", "from": [20, 20, 20], "to": [12, 12, 8], "how": "trilinear"},
    ]
    lines = report.adaptations
    assert lines[0].startswith("down_projection.proj.weight: input channels 1 → 2")
    assert lines[1].startswith(
        "eva.pos_embed: positional embedding interpolated from 20 × 20 × 20 to 12 × 12 × 8"
    )
    # the MAE decoder (decoder.*, mask_token) and the reconstruction head: never loaded
    parts = {p["part"]: p for p in report.not_transferred}
    assert parts["head"]["tensors"] == len(source.up_projection.state_dict())
    assert parts["decoder"]["tensors"] == len(source.decoder.state_dict()) + 1
    assert "head is always built for your classes" in parts["head"]["why"]
    mine, theirs = net.state_dict(), source.state_dict()
    blocks = [k for k in encoder if k.startswith("eva.blocks.") or k == "eva.norm.weight"]
    assert blocks and all(torch.equal(mine[k], theirs[k]) for k in blocks)
    # the ramp sampled at the new tokens' centres stays the ramp: (x + 2y − z) · (c + 1)
    # at x' = (i + 0.5) · 20/12 − 0.5 (and z' with 20/8), all inside the 20³ grid
    at = [(torch.arange(n) + 0.5) * 20 / n - 0.5 for n in (12, 12, 8)]
    x, y, z = torch.meshgrid(*at, indexing="ij")
    expected = (x + 2 * y - z).reshape(1, -1, 1) * torch.arange(1.0, 49.0)
    # float32 rounding of values up to 48 · 57: a few ulps of the largest
    tol = 8 * torch.finfo(torch.float32).eps * expected.abs().max().item()
    torch.testing.assert_close(mine["eva.pos_embed"], expected, rtol=0, atol=tol)
    note = next(n for n in report.notes if n.startswith("nnssl adaptation plan"))
    assert "PrimusM (embed_dim 48, 2 blocks, 2 heads, patch embedding 8)" in note
    assert "model.name: primus, model.preset: M, model.patch_embed: 8" in note
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 2, *PATCH)).shape == (1, 3, *PATCH)


@pytest.mark.usefixtures("tiny_m")
def test_primus_file_for_a_resenc_network_is_refused_naming_both(tmp_path: Path) -> None:
    path, _ = _checkpoint(tmp_path)
    resenc = ModelConfig(name="resencunet", features=(4, 8, 16))
    with pytest.raises(WeightsError) as info:
        check_checkpoint(path, "auto", resenc, 1, 2, 0.0, 1.0, patch_size=(32, 32, 32))
    msg = str(info.value)
    assert "this nnssl checkpoint holds nnssl PrimusM (Primus, preset M)" in msg
    assert "the configured network is model.name: resencunet" in msg
    assert msg.endswith("How to fix: set model.name: primus, model.preset: M, model.patch_embed: 8")
    small = ModelConfig(name="primus", features=(24, 1, 1))
    with pytest.raises(WeightsError, match=r"embed_dim, depth: \[24, 1\]"):
        check_checkpoint(path, "auto", small, 1, 2, patch_size=PATCH)


@pytest.mark.usefixtures("tiny_m")
def test_positional_embedding_of_another_patch_is_refused(tmp_path: Path) -> None:
    plan = nnssl_primus_plan(patch=(128, 128, 128))  # 16³ tokens; the weights have 20³
    path = nnssl_checkpoint(tmp_path, _ramp_source(), plan)
    with pytest.raises(WeightsError, match=r"should have 4096 tokens; found shape \[1, 8000, 48\]"):
        check_checkpoint(path, "auto", PRIMUS, 1, 2, patch_size=PATCH)


def test_full_size_primus_m_layout_loads_every_encoder_tensor() -> None:
    """nnssl's PrimusM at full size (embed_dim 864, 16 blocks): every encoder tensor of
    the published layout has its place, the positional embedding is resized."""
    model = build_network(PRIMUS, 1, 2, PATCH)
    own = canonical_state(model)
    size = sum(p.numel() for p in model.parameters())
    layout = {k: torch.zeros(v.shape) for k, v in own.items() if not k.startswith("up_proj")}
    layout["eva.pos_embed"] = torch.zeros(1, 20**3, 864)
    layout["mask_token"] = torch.zeros(1, 1, 864)
    layout["up_projection.decode.2.weight"] = torch.zeros(32, 1, 2, 2, 2)

    class Layout(torch.nn.Module):
        def state_dict(self, *args, **kwargs):  # noqa: ARG002 - the published names
            return layout

    checkpoint = nnssl_checkpoint_dict(Layout(), nnssl_primus_plan(), TRAINER)
    notes: list[str] = []
    state, plan, net = from_nnssl(checkpoint, Path("checkpoint_final.pth"), notes)
    assert plan.architecture == "PrimusM" and net.grid == (20, 20, 20)
    settings = {"name": "primus", "preset": "M", "patch_embed": 8}
    weights = Weights(
        Path("checkpoint_final.pth"),
        "nnssl",
        state,
        notes,
        "nnssl PrimusM",
        settings,
        token_grid=net.grid,
    )
    report = plan_transfer(model, ARCH, weights).report
    refuse_mismatch(report)
    encoder = [k for k in own if ARCH.part_of(k) == "encoder"]
    assert report.fraction_loaded == 1.0 and sorted(report.loaded) == sorted(encoder)
    assert report.encoder_params_loaded == size - sum(
        p.numel() for k, p in model.named_parameters() if k.startswith("up_projection.")
    )
    assert [s["stage"] for s in report.stages][0] == "down_projection+eva.pos_embed"
    per_block = 23  # gammas, 5 norms (w, b), q (w, b), k (w), v, proj, fc1_g, fc1_x, fc2
    assert [s["tensors"] for s in report.stages][1:] == [4 * per_block] * 3 + [4 * per_block + 2]


def test_stages_freeze_and_one_training_step_trains_only_the_deepest() -> None:
    """partial with 1 stage: the last block group and the final norm train, the rest of
    the encoder keeps its values, the head learns."""
    from medtl.train.strategies import StageSchedule, StrategySpec

    torch.manual_seed(0)
    cfg = ModelConfig(name="primus", features=(48, 4, 2))
    net = build_network(cfg, 1, 2, (32, 32, 16))
    names = [s.name for s in encoder_stages(net, ARCH)]
    blocks = [f"eva.blocks.{i}" for i in range(3)]
    assert names == ["down_projection+eva.pos_embed", *blocks, "eva.blocks.3+eva.norm"]
    schedule = StageSchedule(net, ARCH, StrategySpec("partial", unfreeze_stages=1))
    schedule.apply(0)
    schedule.train_mode()
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    optimiser = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(2, 1, 32, 32, 16), torch.randint(0, 2, (2, 32, 32, 16))
    torch.nn.functional.cross_entropy(net(x), y).backward()
    optimiser.step()
    changed = {k for k, p in net.named_parameters() if not torch.equal(p, before[k])}
    deepest = {k for k in before if k.startswith(("eva.blocks.3.", "eva.norm."))}
    head = {k for k in before if k.startswith("up_projection.")}
    assert changed == deepest | head
