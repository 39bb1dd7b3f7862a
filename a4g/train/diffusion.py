"""Training objectives and samplers: DDPM ε-prediction (Latte/DiT) and flow matching (SiT/REPA).

Both objectives share one interface so the training loop does not care which is used:

* ``training_loss(model_fn, x0, model_kwargs, generator)`` draws t and noise, runs the model once and
  returns the per-sample loss together with the model's hidden tokens, so the alignment loss reuses
  the same forward pass.
* ``sample_loop(denoise_fn, noise, sampler, steps, generator)`` integrates from noise to data.

The model always sees timesteps on the DDPM scale ``[0, 1000)``: DDPM passes its integer step, flow
matching passes ``1000 * t`` so one timestep embedder suits both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

ModelFn = Callable[..., tuple[Tensor, Tensor | None]]  # model_fn(x_t, t, **kwargs) -> (out, hidden)
DenoiseFn = Callable[[Tensor, Tensor], Tensor]  # (x_t, t) -> prediction, guidance already applied

FLOW_TIME_SCALE = 1000.0  # flow time t in [0, 1] is fed to the model as 1000 * t


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all but the batch axis, in fp32 (losses stay exact under bf16 autocast)."""
    return x.float().mean(dim=tuple(range(1, x.ndim)))


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """Per-sample ``[B]`` values → ``[B, 1, ...]`` to broadcast against ``like``."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


class Objective(ABC):
    """A noising process, its regression target and the samplers that invert it."""

    samplers: tuple[str, ...]  # the first one is the default

    @abstractmethod
    def training_loss(
        self,
        model_fn: ModelFn,
        x0: Tensor,
        model_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor | None]:
        """Returns ``loss`` ``[B]`` (fp32), ``hidden`` (the model's second output) and ``t`` ``[B]``."""

    @abstractmethod
    def sample_loop(
        self,
        denoise_fn: DenoiseFn,
        noise: Tensor,
        sampler: str,
        steps: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Map ``noise`` to data in ``steps`` model evaluations (Heun: about twice as many)."""

    def _check_sampler(self, sampler: str) -> None:
        if sampler not in self.samplers:
            raise ValueError(f"{type(self).__name__} samples with {self.samplers}, not {sampler!r}")


class DDPM(Objective):
    """ε-prediction with a linear β schedule (1e-4 … 0.02 over 1000 steps), as Latte and DiT."""

    samplers = ("ddpm", "ddim")

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        self.num_timesteps = num_timesteps
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    def training_loss(self, model_fn, x0, model_kwargs=None, generator=None):
        b = x0.shape[0]
        t = torch.randint(0, self.num_timesteps, (b,), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        ab = _bcast(self.alphas_cumprod.to(x0.device, torch.float32)[t], x0)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        out, hidden = model_fn(x_t, t.float(), **(model_kwargs or {}))
        return {"loss": mean_flat((out.float() - noise.float()) ** 2), "hidden": hidden, "t": t}

    def sample_loop(self, denoise_fn, noise, sampler, steps, generator):
        """Respaced reverse process on ``steps`` evenly spread timesteps (``steps=1000``: all of them).

        ``ddpm`` is ancestral sampling with the posterior variance β̃ (no noise on the last step);
        ``ddim`` is deterministic DDIM (η = 0).
        """
        self._check_sampler(sampler)
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be in [1, {self.num_timesteps}], got {steps}")
        ts = torch.linspace(0, self.num_timesteps - 1, steps, dtype=torch.float64).round().long()
        ab = self.alphas_cumprod[ts].tolist()
        x = noise
        for i in reversed(range(len(ts))):
            a_t, a_prev = ab[i], (ab[i - 1] if i > 0 else 1.0)
            eps = denoise_fn(x, torch.full((x.shape[0],), float(ts[i]), device=x.device))
            x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
            if sampler == "ddim":
                x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
                continue
            beta = 1 - a_t / a_prev
            x = (a_prev**0.5 * beta * x0 + (1 - beta) ** 0.5 * (1 - a_prev) * x) / (1 - a_t)
            if i > 0:
                std = (beta * (1 - a_prev) / (1 - a_t)) ** 0.5
                x = x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x


class FlowMatching(Objective):
    """Linear interpolant ``x_t = (1 - t) x0 + t ε`` with v-prediction ``v = ε - x0``, as SiT/REPA.

    ``t = 0`` is data, ``t = 1`` is noise. Training draws t uniformly or logit-normally
    (``sigmoid(N(logit_mean, logit_std))``, which concentrates on mid-range t).
    """

    samplers = ("euler", "heun")

    def __init__(
        self,
        time_sampling: Literal["uniform", "logit_normal"] = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
    ) -> None:
        if time_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"time_sampling must be 'uniform' or 'logit_normal', got {time_sampling!r}")
        self.time_sampling = time_sampling
        self.logit_mean = logit_mean
        self.logit_std = logit_std

    def sample_t(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        if self.time_sampling == "uniform":
            return torch.rand(n, generator=generator, device=device)
        z = torch.randn(n, generator=generator, device=device)
        return torch.sigmoid(self.logit_mean + self.logit_std * z)

    def training_loss(self, model_fn, x0, model_kwargs=None, generator=None):
        t = self.sample_t(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        tb = _bcast(t, x0).to(x0.dtype)
        x_t = (1 - tb) * x0 + tb * noise
        out, hidden = model_fn(x_t, t * FLOW_TIME_SCALE, **(model_kwargs or {}))
        return {"loss": mean_flat((out.float() - (noise - x0).float()) ** 2), "hidden": hidden, "t": t}

    def sample_loop(self, denoise_fn, noise, sampler, steps, generator):
        """Integrate dx/dt = v from t = 1 to 0 on a uniform grid (Euler, or Heun with an Euler last step
        because the velocity may be singular at t = 0). Deterministic: ``generator`` is unused."""
        self._check_sampler(sampler)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
        x = noise

        def velocity(x: Tensor, t: float) -> Tensor:
            return denoise_fn(x, torch.full((x.shape[0],), t * FLOW_TIME_SCALE, device=x.device))

        for t, t_next in zip(grid[:-1], grid[1:], strict=True):
            v = velocity(x, t)
            x_euler = x + (t_next - t) * v
            if sampler == "heun" and t_next > 0:
                x = x + (t_next - t) * 0.5 * (v + velocity(x_euler, t_next))
            else:
                x = x_euler
        return x


def create_objective(name: Literal["ddpm", "flow"], **kwargs: Any) -> Objective:
    """``"ddpm"`` → :class:`DDPM`, ``"flow"`` → :class:`FlowMatching`; kwargs go to the constructor."""
    objectives: dict[str, type[Objective]] = {"ddpm": DDPM, "flow": FlowMatching}
    if name not in objectives:
        raise ValueError(f"unknown objective {name!r}; choose one of {list(objectives)}")
    return objectives[name](**kwargs)


def guided_denoise_fn(
    model: ModelFn, y: Tensor | None, cfg_scale: float, null_class: int | None
) -> DenoiseFn:
    """Wrap the model for sampling; ``cfg_scale != 1`` runs cond and null-class halves in one batch
    and returns ``uncond + s * (cond - uncond)``."""
    if cfg_scale == 1.0:
        return lambda x, t: model(x, t, y)[0]
    if y is None or null_class is None:
        raise ValueError(
            "classifier-free guidance (cfg_scale != 1) needs labels y and a class-conditional model"
        )
    y_both = torch.cat([y, torch.full_like(y, null_class)])

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), y_both)[0].chunk(2)
        return uncond + cfg_scale * (cond - uncond)

    return denoise


@torch.no_grad()
def sample(
    model: nn.Module,
    objective: Objective,
    shape: tuple[int, ...],
    sampler: str | None = None,
    steps: int = 50,
    y: Tensor | None = None,
    cfg_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw latents ``shape = [B, F, C, h, w]`` from ``model`` (put in eval mode for the call).

    Deterministic given ``generator``, which must live on the model's device. ``sampler`` defaults to
    the objective's first (``ddpm`` / ``euler``).
    """
    sampler = sampler or objective.samplers[0]
    device = next(model.parameters()).device
    null_class = model.null_class if getattr(model, "num_classes", 0) else None
    denoise = guided_denoise_fn(model, y, cfg_scale, null_class)
    noise = torch.randn(shape, generator=generator, device=device)
    was_training = model.training
    model.eval()
    try:
        return objective.sample_loop(denoise, noise, sampler, steps, generator)
    finally:
        model.train(was_training)
