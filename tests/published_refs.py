"""Published reference functions written out for the tests (never imported by a4g itself).

MAE's ``util/pos_embed.py`` sin-cos tables, which DiT (``models.py``) and Latte (``models/latte.py``,
plus its ``get_1d_sincos_temp_embed``) copy verbatim. Kept in numpy float64 exactly as published so a
test compares a4g against the same arithmetic the checkpoints were made with.
"""

from __future__ import annotations

import numpy as np


def mae_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """``get_1d_sincos_pos_embed_from_grid(dim, pos)`` → ``[len(pos), dim]``: ``[sin | cos]``."""
    omega = np.arange(dim // 2, dtype=np.float64)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """``get_2d_sincos_pos_embed`` → ``[grid_h*grid_w, dim]``, tokens row-major.

    Square in the papers; with two sizes this is the same code (as OpenSora/PixArt generalize it).
    """
    grid = np.meshgrid(np.arange(grid_w, dtype=np.float32), np.arange(grid_h, dtype=np.float32))  # w first
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_h, grid_w])
    emb_h = mae_1d(dim // 2, grid[0])  # MAE's name; grid[0] is the column (w) index
    emb_w = mae_1d(dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def latte_temp_embed(dim: int, length: int) -> np.ndarray:
    """Latte's ``get_1d_sincos_temp_embed(dim, length)``: the 1-D table of positions 0..length-1."""
    return mae_1d(dim, np.arange(length))
