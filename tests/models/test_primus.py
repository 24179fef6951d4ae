"""medtl's Primus against dynamic-network-architectures 0.4.4's (the reference files in
tests/models/fixtures/, written by make_primus_reference.py with DNA and timm 1.0.15)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medtl.models.primus import (
    PRIMUS_SIZES,
    Primus,
    interpolate_pos_embed,
    rotary_embedding,
    size_problem,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _tiny_reference() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    tensors = load_file(FIXTURES / "primus_tiny.safetensors")
    return tensors, tensors.pop("__input__"), tensors.pop("__output__")


def test_tiny_primus_equals_dna_key_for_key_and_in_its_output() -> None:
    state, x, expected = _tiny_reference()
    net = Primus(1, 2, (32, 32, 16), embed_dim=48, depth=2, heads=2).eval()
    mine = net.state_dict()
    assert {k: tuple(v.shape) for k, v in mine.items()} == {
        k: tuple(v.shape) for k, v in state.items()
    }
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = net(x)
    assert out.shape == expected.shape == (1, 2, 32, 32, 16)
    # Float32 rounding grows with the number of terms summed along the way: the patch
    # convolution (8³ voxels), per block six sums over the width (q, k, v, output
    # projection, two MLP inputs), one over the MLP's hidden width and one over the
    # tokens (attention), and the decoder's three transposed convolutions over its widths.
    embed, hidden, tokens, depth = 48, 128, 4 * 4 * 2, 2
    terms = 8**3 + depth * (6 * embed + hidden + tokens) + 3 * embed
    tol = torch.finfo(torch.float32).eps * terms * expected.abs().max().item()
    torch.testing.assert_close(out, expected, rtol=0, atol=tol)
    assert not torch.allclose(out, torch.zeros_like(out), atol=tol)


def test_primus_m_has_dna_keys_shapes_order_and_parameter_count() -> None:
    record = json.loads((FIXTURES / "primus_m_keys.json").read_text())
    size = PRIMUS_SIZES["M"]
    net = Primus(1, 2, (160, 160, 160), (8, 8, 8), size.embed_dim, size.depth, size.heads)
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert list(shapes) == list(record["state_dict"])  # same names in the same order
    assert shapes == record["state_dict"]
    assert sum(p.numel() for p in net.parameters()) == record["parameters"] == 152_021_402


def test_rotary_embedding_rotates_pairs_by_position_times_frequency() -> None:
    """On a 1 × 1 × 3 grid only the last axis moves: its angles are z · 10000^(-i/4)."""
    emb = rotary_embedding((1, 1, 3), 16)
    assert emb.shape == (3, 2 * 24)
    sin, cos = emb.tensor_split(2, -1)
    bands = [10000 ** (-i / 4) for i in range(4)]
    for z in range(3):
        expected = [math.sin(z * b) for b in bands for _ in range(2)]
        torch.testing.assert_close(sin[z, 16:], torch.tensor(expected), rtol=0, atol=1e-6)
        assert torch.equal(sin[z, :16], torch.zeros(16))
        assert torch.equal(cos[z, :16], torch.ones(16))


def test_pos_embed_interpolation_keeps_a_linear_ramp_linear() -> None:
    """A ramp along each axis, a + b·x + c·y + d·z on a 20 × 20 × 20 grid, resized to
    12 × 12 × 8: trilinear interpolation of a linear function is that function at the
    sample points (x' + 0.5) · 20/12 − 0.5 (align_corners False), which all lie inside
    the source grid when it shrinks (nothing is clamped)."""
    src, dst = (20, 20, 20), (12, 12, 8)
    axes = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in src), indexing="ij")
    ramp = 1.0 + 2.0 * axes[0] - 0.5 * axes[1] + 0.25 * axes[2]
    pos = torch.stack([ramp, -ramp], -1).reshape(1, -1, 2)
    out = interpolate_pos_embed(pos, src, dst)
    assert out.shape == (1, 12 * 12 * 8, 2)
    grid = out[0, :, 0].reshape(dst)
    at = [
        (torch.arange(d, dtype=torch.float32) + 0.5) * s / d - 0.5
        for s, d in zip(src, dst, strict=True)
    ]
    x, y, z = torch.meshgrid(*at, indexing="ij")
    expected = 1.0 + 2.0 * x - 0.5 * y + 0.25 * z
    torch.testing.assert_close(grid, expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(out[0, :, 1], -out[0, :, 0])


def test_wrong_input_shape_and_impossible_sizes_are_refused() -> None:
    net = Primus(1, 2, (32, 32, 16), embed_dim=48, depth=1, heads=2)
    with pytest.raises(ValueError, match=r"built for \[32, 32, 16\] voxel patches"):
        net(torch.zeros(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="multiple of the patch embedding"):
        Primus(1, 2, (30, 32, 16), embed_dim=48, depth=1, heads=2)
    assert size_problem(48, 2) is None and size_problem(48, 3) is not None
