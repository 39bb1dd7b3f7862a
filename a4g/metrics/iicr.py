"""IICR: inter/intra cluster ratio, a score of how good an encoder's tokens are as video-DiT targets.

Align4Gen argues that a good alignment target is both *discriminative* (different objects in a frame
get different features) and *temporally consistent* (the same object keeps its features over time).
This project's definition, for one clip of T frames with per-frame tokens F_t ∈ R^{N×C}:

1. L2-normalize every token (cosine geometry; makes the score invariant to feature scale).
2. Group the T·N tokens of the clip: k-means (k-means++ init, fixed seed) — or, in mask mode,
   ground-truth object ids per token (`labels_to_tokens`).
3. D_intra = mean cosine distance (1 − cos) over all pairs of tokens in the *same* group and
   *different* frames: how much an object's features drift over time (lower is better).
   D_inter = mean cosine distance over all pairs of tokens in *different* groups and the *same*
   frame: how separable objects are within a frame (higher is better).
   Means are pooled over pairs (a group with more pairs weighs more), not averaged per group.
4. IICR = D_inter / (D_inter + D_intra) ∈ [0, 1]; higher is better. It is 0.5 when the grouping
   carries no information (e.g. random labels). k-means on structureless features scores a little
   above 0.5, because clustering alone puts nearby tokens together; compare encoders at equal k.

Pair means come from sums: with S_{g,t} the sum of normalized tokens of group g in frame t and
n_{g,t} their count, Σ_{pairs} x_i·x_j over ordered pairs with the same g and t ≠ t' is
Σ_g (‖Σ_t S_{g,t}‖² − Σ_t ‖S_{g,t}‖²), and similarly for the same t and g ≠ g'. That is
O(T·N·C) instead of O((T·N)²·C). Tokens with a negative label are ignored (void / unknown).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from a4g.metrics.kmeans import kmeans


def _group_sums(x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per (frame, group) sums S [T, G, C] and counts n [T, G] of normalized tokens."""
    t, n, c = x.shape
    keep = labels >= 0
    _, groups = torch.unique(labels[keep], return_inverse=True)
    g = int(groups.max()) + 1 if groups.numel() else 0
    frame = torch.arange(t)[:, None].expand(t, n)[keep]
    flat = frame * g + groups
    sums = torch.zeros(t * g, c, dtype=x.dtype).index_add_(0, flat, x[keep])
    counts = torch.bincount(flat, minlength=t * g).to(x.dtype)
    return sums.view(t, g, c), counts.view(t, g)


def pair_distances(tokens: Tensor, labels: Tensor) -> tuple[float, float]:
    """(D_intra, D_inter) for tokens [T, N, C] and integer group labels [T, N] (see module doc)."""
    if tokens.ndim != 3 or labels.shape != tokens.shape[:2]:
        raise ValueError(f"tokens must be [T, N, C] and labels [T, N]; got {tokens.shape}, {labels.shape}")
    x = torch.nn.functional.normalize(tokens.detach().to("cpu", torch.float64), dim=-1)
    s, n = _group_sums(x, labels.detach().to("cpu", torch.long))
    sq = (s * s).sum(-1)  # ‖S_{g,t}‖² [T, G]

    per_group = s.sum(0)  # Σ_t S_{g,t}  [G, C]
    intra_dot = ((per_group * per_group).sum(-1) - sq.sum(0)).sum()
    intra_pairs = (n.sum(0) ** 2 - (n * n).sum(0)).sum()

    per_frame = s.sum(1)  # Σ_g S_{g,t}  [T, C]
    inter_dot = ((per_frame * per_frame).sum(-1) - sq.sum(1)).sum()
    inter_pairs = (n.sum(1) ** 2 - (n * n).sum(1)).sum()

    if intra_pairs == 0 or inter_pairs == 0:
        raise ValueError(
            "IICR needs a group seen in two frames and two groups in one frame "
            f"(intra pairs {int(intra_pairs)}, inter pairs {int(inter_pairs)})"
        )
    return float(1.0 - intra_dot / intra_pairs), float(1.0 - inter_dot / inter_pairs)


def _ratio(d_intra: float, d_inter: float) -> float:
    total = d_inter + d_intra
    return float(d_inter / total) if total > 0 else float("nan")


def iicr_from_labels(tokens: Tensor, labels: Tensor) -> tuple[float, float, float]:
    """(IICR, D_intra, D_inter) with given groups, e.g. ground-truth object ids per token."""
    d_intra, d_inter = pair_distances(tokens, labels)
    return _ratio(d_intra, d_inter), d_intra, d_inter


def iicr_clip(tokens: Tensor, k: int, seed: int = 0) -> tuple[float, float, float]:
    """(IICR, D_intra, D_inter) with k-means groups over all T·N tokens of one clip [T, N, C]."""
    t, n, c = tokens.shape
    x = torch.nn.functional.normalize(tokens.detach().to("cpu", torch.float64), dim=-1)
    labels = kmeans(x.reshape(t * n, c), k, seed).view(t, n)
    return iicr_from_labels(x, labels)


def labels_to_tokens(label_map: np.ndarray | Tensor, grid: tuple[int, int]) -> Tensor:
    """Majority label per token cell: integer maps [H, W] or [T, H, W] -> [T, h*w] for a (h, w) grid.

    Pixel row r belongs to token row r*h//H (same for columns), so sizes need not divide evenly.
    Ties go to the smallest label.
    """
    lab = torch.as_tensor(np.asarray(label_map)).long()
    if lab.ndim == 2:
        lab = lab[None]
    t, hh, ww = lab.shape
    h, w = grid
    if h > hh or w > ww:
        raise ValueError(f"token grid {grid} is finer than the label map {(hh, ww)}")
    values, idx = torch.unique(lab, return_inverse=True)
    rows = torch.arange(hh) * h // hh
    cols = torch.arange(ww) * w // ww
    cell = (rows[:, None] * w + cols[None, :]).expand(t, hh, ww)
    frame = torch.arange(t)[:, None, None].expand(t, hh, ww)
    key = ((frame * (h * w) + cell) * len(values) + idx).reshape(-1)
    votes = torch.bincount(key, minlength=t * h * w * len(values)).view(t, h * w, len(values))
    return values[votes.argmax(-1)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) std over clips, ignoring NaNs from degenerate clips."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std())
