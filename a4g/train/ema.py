"""Exponential moving average of the V-DiT weights (what sampling uses, as in DiT/Latte/REPA)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from a4g.errors import ConfigError


class EMA:
    """Keeps ``ema = decay * ema + (1 - decay) * param`` in float32 after every optimizer step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"--ema must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema = list(self.model.parameters())
        live = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(ema, live, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
