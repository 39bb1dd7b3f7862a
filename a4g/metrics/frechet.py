"""Gaussian feature statistics and the Fréchet distance between them (shared by FVD and FID).

Statistics follow StyleGAN(-V)'s `FeatureStats`: sums are accumulated in float64 and the covariance is
the *biased* (divide by N) estimate, so numbers are comparable with papers that use that code. Both
metrics stream their detector batches through `feature_stats`, as StyleGAN-V's `compute_feature_stats`
does, so even 50,000 frames x 2048 features never sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn


class FeatureStats:
    """Streaming mean/covariance of feature rows, so millions of frames never sit in memory."""

    def __init__(self) -> None:
        self.num = 0
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None
        self._fixed: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_mean_cov(cls, mu: np.ndarray, sigma: np.ndarray, num: int) -> FeatureStats:
        """Statistics loaded from a cache (``--real-stats``): ``mean_cov`` returns exactly these."""
        stats = cls()
        stats.num, stats._fixed = int(num), (np.asarray(mu, np.float64), np.asarray(sigma, np.float64))
        return stats

    def append(self, feats: np.ndarray) -> None:
        if self._fixed is not None:
            raise ValueError("statistics loaded from a cache cannot take more features")
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {x.shape}")
        if self._sum is None:
            self._sum = np.zeros(x.shape[1])
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self._sum.shape[0]:
            raise ValueError(f"feature width changed from {self._sum.shape[0]} to {x.shape[1]}")
        self.num += x.shape[0]
        self._sum += x.sum(axis=0)
        self._outer += x.T @ x

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self._fixed is not None:
            return self._fixed
        if self.num < 2:
            raise ValueError(f"need at least 2 feature rows for a covariance, got {self.num}")
        mu = self._sum / self.num
        sigma = self._outer / self.num - np.outer(mu, mu)
        return mu, (sigma + sigma.T) / 2  # symmetrize away float round-off


@torch.no_grad()
def feature_stats(
    batches: Iterable[Tensor], detector: nn.Module, device: str | torch.device = "cpu"
) -> FeatureStats:
    """Streaming statistics of ``detector(batch)`` [B, D] over every batch of network inputs."""
    stats = FeatureStats()
    for batch in batches:
        stats.append(detector(batch.to(device)).cpu().numpy())
    return stats


def frechet_of(real: FeatureStats, fake: FeatureStats) -> float:
    """Fréchet distance between the Gaussians of two sides (generated first, as StyleGAN-V calls it)."""
    return frechet_distance(*fake.mean_cov(), *real.mean_cov())


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased covariance of [N, D] features (same estimator as `FeatureStats`)."""
    stats = FeatureStats()
    stats.append(feats)
    return stats.mean_cov()


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = scipy.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + tr(S1 + S2 - 2 (S1 S2)^{1/2}).

    tr((S1 S2)^{1/2}) is computed as the sum of square roots of the eigenvalues of the *symmetric*
    PSD matrix S1^{1/2} S2 S1^{1/2} (same spectrum as S1 S2). Unlike `scipy.linalg.sqrtm(S1 @ S2)`
    this never produces complex parts or NaNs for singular covariances (fewer samples than dims),
    and tiny negative eigenvalues from round-off are clipped to 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    r1 = _psd_sqrt((s1 + s1.T) / 2)
    m = r1 @ ((s2 + s2.T) / 2) @ r1
    eig = scipy.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
