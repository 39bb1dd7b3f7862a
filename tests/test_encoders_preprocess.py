"""Shared frame preprocessing: short-side resize, center crop, flip twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from a4g.encoders import square_frames
from a4g.encoders.preprocess import short_side_shape


def _video(n: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_shapes_for_landscape_and_portrait():
    assert short_side_shape(240, 320, 256) == (256, 341)
    assert short_side_shape(320, 240, 256) == (341, 256)
    for h, w in ((120, 160), (160, 120), (96, 96)):
        out = square_frames(_video(3, h, w), 64)
        assert out.shape == (3, 3, 64, 64) and out.dtype == torch.uint8


def test_center_crop_is_exact_when_no_resize_is_needed():
    video = _video(2, 64, 101)
    out = square_frames(video, 64)
    left = (101 - 64) // 2
    expected = torch.from_numpy(video[:, :, left : left + 64]).permute(0, 3, 1, 2)
    assert torch.equal(out, expected)


def test_resize_matches_torchvision_and_keeps_constants():
    video = _video(2, 90, 120)
    out = square_frames(video, 48)
    ref = TF.resize(
        torch.from_numpy(video).permute(0, 3, 1, 2), [48, 64], TF.InterpolationMode.BICUBIC, antialias=True
    )
    diff = (out.int() - ref[:, :, :, 8:56].int()).abs()  # torchvision's uint8 path is fixed-point
    assert diff.float().mean() < 0.3 and (diff > 1).float().mean() < 0.01 and diff.max() <= 4
    flat = np.full((1, 90, 120, 3), 77, dtype=np.uint8)
    assert torch.all(square_frames(flat, 48) == 77)
    assert torch.equal(square_frames(video, 48), out)  # deterministic


def test_hflip_mirrors_the_square_frame():
    video = _video(2, 70, 97)  # odd crop margin: crop-then-flip != flip-then-crop
    out = square_frames(video, 64)
    assert torch.equal(square_frames(video, 64, hflip=True), out.flip(-1))


def test_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        square_frames(_video(1, 32, 32).astype(np.float32), 16)
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        square_frames(_video(1, 32, 32)[0], 16)
