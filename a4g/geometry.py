"""Token geometry shared by extraction, the store, the model and IICR: one V-DiT token per patch.

A frame of ``size`` pixels becomes a VAE latent of ``size / downsample`` cells, and the V-DiT cuts
that latent into ``PATCH_SIZE x PATCH_SIZE`` patches, one token each (DiT and Latte use 2). Encoder
targets are resampled onto that same token grid, so the store's ``token_grid`` and the model's
patch grid must agree: both derive from this one constant.
"""

from __future__ import annotations

from a4g.errors import ConfigError

PATCH_SIZE = 2
"""V-DiT patch size on the latent grid: one target token per PATCH_SIZE x PATCH_SIZE latent cells."""


def token_grid_for(size: int, downsample: int) -> tuple[int, int]:
    """The V-DiT token grid a square frame of `size` pixels gives (VAE /downsample, patch PATCH_SIZE)."""
    cell = downsample * PATCH_SIZE
    if size % cell:
        raise ConfigError(
            f"--size {size} must be a multiple of {cell} (VAE /{downsample}, patch {PATCH_SIZE})"
        )
    side = size // cell
    return side, side
