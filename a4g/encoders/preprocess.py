"""The one frame preprocessing every encoder and the VAE share: short-side resize, then center crop.

Every model sees the same square pixels, so encoder tokens and VAE latents describe the same image
region. Flip twins are the mirror of that square frame (flip after crop), which keeps the flipped
features exactly aligned with the flipped latents even when the crop margin is odd.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Interpolation = Literal["bicubic", "bilinear", "area"]


def short_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after scaling the short side to `size`, keeping the aspect ratio (rounded)."""
    if height <= width:
        return size, max(size, round(width * size / height))
    return max(size, round(height * size / width)), size


def square_frames(
    frames: np.ndarray | torch.Tensor,
    size: int,
    interpolation: Interpolation = "bicubic",
    hflip: bool = False,
) -> torch.Tensor:
    """uint8 frames [N, H, W, 3] -> uint8 [N, 3, size, size] (short side resized to `size`, center crop).

    Deterministic (CPU float32 math, round-half-even, clamp). Resizing uses antialiasing when it
    shrinks, so downscaled frames do not alias. `hflip` mirrors the square output (see module doc).
    """
    x = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [N, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2)
    height, width = x.shape[-2:]
    new_h, new_w = short_side_shape(height, width, size)
    if (new_h, new_w) != (height, width):
        kwargs = {} if interpolation == "area" else {"align_corners": False, "antialias": True}
        y = F.interpolate(x.float(), size=(new_h, new_w), mode=interpolation, **kwargs)
        x = y.round_().clamp_(0, 255).to(torch.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    if hflip:
        x = x.flip(-1)
    return x.contiguous()
