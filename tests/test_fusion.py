"""Token resampling, per-encoder L2 normalisation, concatenation and the fusion/layout specs."""

from __future__ import annotations

import pytest
import torch

from a4g.encoders import create_encoder
from a4g.encoders.fusion import (
    fuse,
    fuse_tokens,
    fusion_spec,
    resample_tokens,
    resampling_mode,
    target_channel_chunk,
    with_token_grid,
)
from a4g.store.schema import EncoderSpec


def _spec(name: str, channels: int, grid: tuple[int, int], resampling: str = "none") -> EncoderSpec:
    return EncoderSpec(
        name=name,
        package="test",
        package_version="0",
        weights_sha256="random",
        input_size=grid[0] * 16,
        output="tokens",
        native_grid=grid,
        resampling=resampling,
        channels=channels,
    )


def _position_tokens(h: int, w: int) -> torch.Tensor:
    """[1, h*w, 2] tokens holding their own (row, col), to check row-major handling."""
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([rows, cols], dim=-1).reshape(1, h * w, 2)


def test_resampling_modes():
    assert resampling_mode((16, 16), (16, 16)) == "none"
    assert resampling_mode((64, 64), (16, 16)) == "area"
    assert resampling_mode((8, 8), (16, 16)) == "bilinear"
    with pytest.raises(ValueError, match="grows while the other shrinks"):
        resampling_mode((8, 32), (16, 16))


def test_identity_area_and_bilinear_resampling():
    tokens = _position_tokens(4, 6)
    assert resample_tokens(tokens, (4, 6), (4, 6)) is tokens
    pooled = resample_tokens(tokens, (4, 6), (2, 3))
    assert pooled.shape == (1, 6, 2)
    # token (r, c) of the 2x3 grid is the mean of the 2x2 block: rows 2r+0.5, cols 2c+0.5
    expected = torch.tensor([[2 * r + 0.5, 2 * c + 0.5] for r in range(2) for c in range(3)]).unsqueeze(0)
    torch.testing.assert_close(pooled, expected)
    up = resample_tokens(torch.ones(2, 16, 5), (4, 4), (8, 8))
    assert up.shape == (2, 64, 5)
    torch.testing.assert_close(up, torch.ones_like(up))
    rows_up = resample_tokens(_position_tokens(4, 4), (4, 4), (8, 8))[0, :, 0].reshape(8, 8)
    assert torch.all(rows_up[1:] >= rows_up[:-1]) and torch.all(rows_up[:, 0] == rows_up[:, -1])
    with pytest.raises(ValueError, match="native grid"):
        resample_tokens(tokens, (4, 6), (2, 3), mode="none")
    with pytest.raises(ValueError, match="expected tokens"):
        resample_tokens(tokens, (5, 5), (5, 5))


def test_fuse_normalises_each_encoder_and_concatenates_in_order():
    token_grid = (16, 16)
    specs = [
        with_token_grid(_spec("a", 32, (16, 16)), token_grid),
        with_token_grid(_spec("b", 16, (64, 64)), token_grid),
        with_token_grid(_spec("c", 48, (8, 8)), token_grid),
    ]
    assert [s.resampling for s in specs] == ["none", "area", "bilinear"]
    g = torch.Generator().manual_seed(0)
    tokens = [
        torch.randn(2, 256, 32, generator=g) * 7,
        torch.randn(2, 4096, 16, generator=g),
        torch.randn(2, 64, 48),
    ]
    fused = fuse(tokens, specs, token_grid)
    assert fused.shape == (2, 256, 96) and fused.dtype == torch.float32
    fspec = fusion_spec(specs)
    assert fspec.order == ["a", "b", "c"]
    assert fspec.slices == {"a": (0, 32), "b": (32, 48), "c": (48, 96)}
    for start, stop in fspec.slices.values():
        torch.testing.assert_close(fused[..., start:stop].norm(dim=-1), torch.ones(2, 256))
    expected_a = tokens[0] / tokens[0].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(fused[..., :32], expected_a)


def test_fuse_tokens_is_the_stores_fusion_on_one_grid():
    """IICR's fused rows call fuse_tokens; it must be exactly what `fuse` stores when grids agree."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 16, 32, generator=g, dtype=torch.float64), torch.randn(2, 16, 16, generator=g)
    specs = [with_token_grid(_spec("a", 32, (4, 4)), (4, 4)), with_token_grid(_spec("b", 16, (4, 4)), (4, 4))]
    torch.testing.assert_close(fuse_tokens(a, b), fuse([a, b], specs, (4, 4)), rtol=0, atol=0)
    want = torch.cat([(a / a.norm(dim=-1, keepdim=True)).float(), b / b.norm(dim=-1, keepdim=True)], -1)
    torch.testing.assert_close(fuse_tokens(a, b), want)
    zero = fuse_tokens(torch.zeros(1, 4, 8))  # a dead token stays zero instead of becoming NaN
    assert torch.equal(zero, torch.zeros(1, 4, 8))


def test_fuse_rejects_specs_without_the_needed_resampling():
    spec = _spec("b", 16, (64, 64))  # resampling 'none' but the grid must shrink
    with pytest.raises(ValueError, match="with_token_grid"):
        fuse([torch.randn(1, 4096, 16)], [spec], (16, 16))
    with pytest.raises(ValueError, match="channels"):
        fuse([torch.randn(1, 256, 8)], [_spec("a", 32, (16, 16))], (16, 16))


def test_target_channel_chunk_divides_every_boundary():
    specs = [_spec("dino", 768, (16, 16)), _spec("sam", 256, (16, 16))]
    chunk = target_channel_chunk(specs)
    assert chunk == 256
    assert all(a % chunk == 0 and b % chunk == 0 for a, b in fusion_spec(specs).slices.values())
    assert target_channel_chunk([_spec("s", 384, (16, 16)), _spec("t", 256, (16, 16))]) == 128


def test_fuse_real_tiny_encoders():
    frames = torch.randint(
        0, 256, (1, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    encoders = [
        create_encoder("dinov2_tiny_reg", random_init=True),
        create_encoder("sam2.1_tiny", random_init=True, sam_res=512),
    ]
    specs = [enc.spec_for((16, 16)) for enc in encoders]
    fused = fuse([enc(frames) for enc in encoders], specs, (16, 16))
    assert fused.shape == (1, 256, 64)
    assert fusion_spec(specs).slices == {"dinov2_tiny_reg": (0, 32), "sam2.1_tiny": (32, 64)}
    torch.testing.assert_close(fused[..., 32:].norm(dim=-1), torch.ones(1, 256))
