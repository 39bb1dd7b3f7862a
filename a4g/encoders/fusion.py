"""Fusing several encoders' tokens into one target per V-DiT token (Align4Gen's concatenation).

Each encoder's native token grid is resampled to the V-DiT token grid (area averaging to shrink,
bilinear to grow, nothing when equal), each token is L2-normalised per encoder so every encoder weighs
the same in the cosine loss, and the results are concatenated in encoder order. The schema records
each encoder's channel slice, so a run can align to any subset by slicing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from a4g.store.schema import EncoderSpec, FusionSpec

Resampling = Literal["area", "bilinear", "bicubic", "none"]
_EPS = 1e-6
"""L2-normalisation floor: an all-zero token stays zero instead of becoming NaN (float16-safe)."""


def resampling_mode(native_grid: Sequence[int], token_grid: Sequence[int]) -> Resampling:
    """'none' when equal, 'area' when both sides shrink (or stay), 'bilinear' when both grow (or stay)."""
    native, token = tuple(native_grid), tuple(token_grid)
    if native == token:
        return "none"
    if all(t <= n for t, n in zip(token, native, strict=True)):
        return "area"
    if all(t >= n for t, n in zip(token, native, strict=True)):
        return "bilinear"
    raise ValueError(f"cannot resample grid {native} to {token}: one side grows while the other shrinks")


def with_token_grid(spec: EncoderSpec, token_grid: Sequence[int]) -> EncoderSpec:
    """The encoder's spec with the resampling that maps its native grid onto `token_grid`."""
    return spec.model_copy(update={"resampling": resampling_mode(spec.native_grid, token_grid)})


def resample_tokens(
    tokens: torch.Tensor,
    native_grid: Sequence[int],
    token_grid: Sequence[int],
    mode: Resampling | Literal["auto"] = "auto",
) -> torch.Tensor:
    """Tokens [B, gh*gw, C] on `native_grid` (row-major) -> [B, th*tw, C] on `token_grid`.

    'area' is adaptive average pooling (exact block means when the grids divide), 'bilinear' and
    'bicubic' use half-pixel centres (``align_corners=False``), 'none' requires equal grids.
    """
    gh, gw = native_grid
    th, tw = token_grid
    if tokens.ndim != 3 or tokens.shape[1] != gh * gw:
        raise ValueError(
            f"expected tokens [B, {gh * gw}, C] for grid {tuple(native_grid)}, got {tuple(tokens.shape)}"
        )
    if mode == "auto":
        mode = resampling_mode(native_grid, token_grid)
    if mode == "none":
        if (gh, gw) != (th, tw):
            raise ValueError(f"resampling 'none' but native grid {(gh, gw)} != token grid {(th, tw)}")
        return tokens
    x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)
    if mode == "area":
        x = F.adaptive_avg_pool2d(x, (th, tw))
    elif mode in ("bilinear", "bicubic"):
        x = F.interpolate(x, size=(th, tw), mode=mode, align_corners=False)
    else:
        raise ValueError(f"unknown resampling mode {mode!r}")
    return x.flatten(2).transpose(1, 2)


def fuse(
    token_list: Sequence[torch.Tensor], specs: Sequence[EncoderSpec], token_grid: Sequence[int]
) -> torch.Tensor:
    """Per-encoder tokens -> float32 [B, th*tw, sum(C)]: resample as each spec records, L2-normalise, concat.

    Specs must carry the resampling for `token_grid` (see :func:`with_token_grid`), so what is
    stored is exactly what the schema says.
    """
    if len(token_list) != len(specs) or not specs:
        raise ValueError(f"got {len(token_list)} token tensors for {len(specs)} encoder specs")
    parts = []
    for tokens, spec in zip(token_list, specs, strict=True):
        if tokens.shape[-1] != spec.channels:
            raise ValueError(
                f"{spec.name}: tokens have {tokens.shape[-1]} channels, spec says {spec.channels}"
            )
        needed = resampling_mode(spec.native_grid, token_grid)
        if (spec.resampling == "none") != (needed == "none"):
            raise ValueError(
                f"{spec.name}: spec resampling {spec.resampling!r} does not fit grid {tuple(spec.native_grid)} -> "
                f"{tuple(token_grid)}; build the spec with with_token_grid()"
            )
        parts.append(resample_tokens(tokens.float(), spec.native_grid, token_grid, spec.resampling))
    return fuse_tokens(*parts)


def fuse_tokens(*tokens: torch.Tensor) -> torch.Tensor:
    """Tokens already on one grid, [..., N, C_i] each -> float32 [..., N, sum(C_i)].

    The store's fusion after resampling: L2-normalise every encoder's tokens, then concatenate, so
    each encoder weighs the same in the cosine loss. IICR's fused rows use it too.
    """
    return torch.cat([F.normalize(t.float(), dim=-1, eps=_EPS) for t in tokens], dim=-1)


def fusion_spec(specs: Sequence[EncoderSpec]) -> FusionSpec:
    """Order and [start, stop) channel slice of every encoder in the fused target."""
    slices, start = {}, 0
    for spec in specs:
        slices[spec.name] = (start, start + spec.channels)
        start += spec.channels
    return FusionSpec(order=[s.name for s in specs], slices=slices)


def target_channel_chunk(specs: Sequence[EncoderSpec]) -> int:
    """Largest inner-chunk width that ends at every encoder boundary: the gcd of the channel widths."""
    if not specs:
        raise ValueError("at least one encoder spec is needed")
    return math.gcd(*(s.channels for s in specs))
