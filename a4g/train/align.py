"""Representation alignment (REPA / Align4Gen): project V-DiT tokens onto cached encoder features.

The V-DiT's hidden tokens after block ``align_depth`` go through a small MLP to the width of the
fused encoder targets and are pulled towards them by negative cosine similarity per token. Targets
are L2-normalized per encoder before fusion, so each encoder weighs equally; normalizing again here
keeps the loss a pure cosine whatever the caller passes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Projector(nn.Sequential):
    """3-layer MLP with SiLU, model width → ``hidden_dim`` → ``hidden_dim`` → target width (as REPA).

    Maps ``[B, F, N, D]`` tokens to ``[B, F, N, C]``. Initialized as REPA's ``initialize_weights``
    (applied to its whole SiT, projectors included): Xavier-uniform weights, zero biases. PyTorch's
    default (Kaiming-uniform with a = √5, bound 1/√fan_in) differs: for the 2048 → 2048 layer its
    bound is 0.022 against Xavier's √(6/4096) = 0.038, and its biases are random.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, out_dim),
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier-uniform weights and zero biases on every linear layer, as REPA."""
        for layer in self:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)


def alignment_loss(projected: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Negative cosine similarity per token, averaged over tokens, frames and batch.

    Args:
        projected: ``[B, F, N, C]`` projector output.
        target: ``[B, F, N, C]`` cached fused encoder features on the same token grid.

    Returns:
        ``(loss, mean_cosine)``: scalar loss in ``[-1, 1]`` (to be weighted by λ; λ = 0 runs the same
        code) and the detached mean cosine similarity for logging.
    """
    if projected.shape != target.shape:
        raise ValueError(
            f"alignment shapes differ: projected {tuple(projected.shape)} vs target {tuple(target.shape)} "
            "([B, F, N, C]); the target grid must equal the V-DiT token grid (latent h/2 x w/2) and the "
            "projector output width the target width"
        )
    cos = (F.normalize(projected.float(), dim=-1) * F.normalize(target.float(), dim=-1)).sum(dim=-1)
    mean_cos = cos.mean()
    return -mean_cos, mean_cos.detach()
