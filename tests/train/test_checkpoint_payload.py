"""What a training run's ``best.pt`` holds (medtl.train.loop.checkpoint_payload)."""

from __future__ import annotations

from pathlib import Path

import torch

from medtl.config import ModelConfig, TrainConfig
from medtl.kernel.files import atomic_torch_save
from medtl.models.networks import build_network
from medtl.models.nnunet_networks import alias_names
from medtl.models.trained import load_model
from medtl.train.loop import RunSpec, checkpoint_payload

RESENC = ModelConfig(name="resencunet", features=(4, 8, 16))


def test_a_tensor_named_twice_is_stored_once_and_loads_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_network(RESENC, 1, 2).eval()
    spec = RunSpec(
        model=RESENC,
        train=TrainConfig(patch_size=(16, 16, 16)),
        num_classes=2,
        classes={"1": "tumour"},
        seed=1,
        tags={},
    )
    payload = checkpoint_payload(net, spec, 1, 0.5)
    aliases = alias_names(net)
    assert aliases and not set(payload["state_dict"]) & set(aliases)
    assert len(payload["state_dict"]) == len(net.state_dict()) - len(aliases)
    path = tmp_path / "best.pt"
    atomic_torch_save(payload, path)
    loaded, _ = load_model(path, torch.device("cpu"))
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), net(x), rtol=0, atol=0)
