"""Small deterministic k-means (k-means++ init) in torch, so IICR needs no scikit-learn."""

from __future__ import annotations

import torch
from torch import Tensor


def _sq_dists(x: Tensor, centers: Tensor) -> Tensor:
    d = (x * x).sum(1, keepdim=True) - 2.0 * x @ centers.T + (centers * centers).sum(1)[None]
    return d.clamp_min_(0.0)


def kmeans_pp_init(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding: each new center drawn with probability proportional to D(x)²."""
    n = x.shape[0]
    centers = [x[torch.randint(n, (1,), generator=gen).item()]]
    d2 = _sq_dists(x, centers[0][None]).squeeze(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than k: any point will do
            idx = torch.randint(n, (1,), generator=gen).item()
        else:
            idx = torch.multinomial(d2 / total, 1, generator=gen).item()
        centers.append(x[idx])
        d2 = torch.minimum(d2, _sq_dists(x, x[idx][None]).squeeze(1))
    return torch.stack(centers)


def kmeans(x: Tensor, k: int, seed: int = 0, max_iter: int = 100) -> Tensor:
    """Lloyd's algorithm on rows of x [M, C]; returns labels [M] in [0, k). Same seed, same result."""
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in [1, {x.shape[0]}], got {k}")
    x = x.detach().to("cpu", torch.float64)  # small problem; CPU keeps the seeded draws reproducible
    gen = torch.Generator().manual_seed(seed)
    centers = kmeans_pp_init(x, k, gen)
    labels = torch.full((x.shape[0],), -1, dtype=torch.long)
    for _ in range(max_iter):
        d2 = _sq_dists(x, centers)
        new = d2.argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        empty = counts == 0
        centers = sums / counts.clamp_min(1)[:, None].double()
        if empty.any():  # re-seed empty clusters at the points farthest from their centers
            far = d2.gather(1, labels[:, None]).squeeze(1).argsort(descending=True)
            centers[empty] = x[far[: int(empty.sum())]]
    return labels
