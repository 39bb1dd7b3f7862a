"""The uniform frozen-encoder interface: uint8 square frames in, native tokens [B, gh*gw, C] out.

Each backend (timm DINOv2, sam2 Hiera) subclasses :class:`FrozenEncoder` and implements only
:meth:`encode_preprocessed`; resizing and normalisation live here so they are identical and testable.

Precision and placement are the caller's: move with ``.to(device)`` and wrap calls in
``torch.autocast(device_type, dtype=torch.bfloat16)`` for fast extraction. Inputs are moved to the
module's device; preprocessing runs in float32 (autocast does not touch interpolation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from a4g.encoders.fusion import with_token_grid
from a4g.store.schema import EncoderSpec


class FrozenEncoder(nn.Module):
    """A frozen image encoder: always in eval mode, no parameter requires grad, never builds a graph."""

    spec: EncoderSpec

    def __init__(
        self,
        model: nn.Module,
        spec: EncoderSpec,
        mean: Sequence[float],
        std: Sequence[float],
        resize_mode: str,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.resize_mode = resize_mode
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.model.requires_grad_(False)
        self.eval()
        # Compiling the encode step only (not preprocessing) keeps state_dict keys unchanged.
        self._encode = torch.compile(self.encode_preprocessed) if compile else self.encode_preprocessed

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Stay in eval mode: a parent module's ``.train()`` must not turn on dropout or drop-path."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def channels(self) -> int:
        return self.spec.channels

    @property
    def native_grid(self) -> tuple[int, int]:
        return self.spec.native_grid

    def spec_for(self, token_grid: Sequence[int]) -> EncoderSpec:
        """The spec to store when tokens are resampled to `token_grid` (records the resampling used)."""
        return with_token_grid(self.spec, token_grid)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> float32 [B, 3, input_size, input_size], resized and mean/std normalised."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected uint8 frames [B, 3, S, S], got {frames.dtype} {tuple(frames.shape)}")
        x = frames.to(self.device, non_blocking=True).float().div_(255.0)
        size = self.spec.input_size
        if tuple(x.shape[-2:]) != (size, size):
            shrink = x.shape[-1] > size
            x = F.interpolate(
                x, size=(size, size), mode=self.resize_mode, align_corners=False, antialias=shrink
            )
            x = x.clamp_(0.0, 1.0)
        return (x - self.mean) / self.std

    def encode_preprocessed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input -> native tokens [B, gh*gw, C] in row-major grid order."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self._encode(self.preprocess(frames))
