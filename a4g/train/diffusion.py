"""Training objectives and samplers: DDPM ε-prediction (Latte/DiT) and flow matching (SiT/REPA).

Both objectives share one interface so the training loop does not care which is used:

* ``training_loss(model_fn, x0, model_kwargs, generator)`` draws t and noise, runs the model once and
  returns the per-sample loss together with the model's hidden tokens, so the alignment loss reuses
  the same forward pass.
* ``sample_loop(denoise_fn, noise, sampler, steps, generator)`` integrates from noise to data.

The model always sees timesteps on the DDPM scale ``[0, 1000)``: DDPM passes its integer step, flow
matching passes ``1000 * t`` so one timestep embedder suits both.

``DDPM(learn_sigma=True)`` is DiT/Latte's default (``ModelVarType.LEARNED_RANGE``, ``LossType.MSE``):
the model also predicts v ∈ [-1, 1] (unconstrained in practice), the log-variance of p(x_{t-1}|x_t) is
``frac·log β_t + (1-frac)·log β̃_t`` with ``frac = (v+1)/2`` (Nichol & Dhariwal 2021, eq. 15), and the
loss is ``mse + vlb``: the ε MSE plus L_vlb in bits per dimension with the mean held fixed (eq. 16's
hybrid objective, DiT's ``frozen_out``). The one deliberate difference from DiT's code: the decoder
term at t = 0 integrates the normal CDF exactly (``log_ndtr``), where DiT uses a tanh approximation
of it. Measured on uniform x0 in [-1, 1] with the t = 0 variance range (σ = 0.0074 … 0.01): the two
agree to 5e-4 bits/dim when the predicted mean is off by 0.5σ, and differ by 0.11-0.13 bits/dim at 2σ,
where the approximation's tail error and DiT's 1e-12 floor dominate. t = 0 is 1 draw in 1000.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from a4g.errors import ConfigError

ModelFn = Callable[..., tuple[Tensor, Tensor | None]]  # model_fn(x_t, t, **kwargs) -> (out, hidden)
# One generator for the batch, or one per sample (row b drawn from generators[b] alone, so a sample's
# noise is the same whatever batch it is drawn in: `a4g sample` makes video i depend on (seed, i) only).
Generators = torch.Generator | Sequence[torch.Generator] | None
DenoiseFn = Callable[[Tensor, Tensor], Tensor]  # (x_t, t) -> prediction, guidance already applied

FLOW_TIME_SCALE = 1000.0  # flow time t in [0, 1] is fed to the model as 1000 * t
VLB_REFERENCE_STEPS = 1000  # DiT scales the VLB term by num_timesteps / 1000: 1 for its 1000 steps
LOG_PROB_FLOOR = 1e-12  # DiT's floor on bin probabilities: bounds the decoder NLL (≤ 40 bits)


def _work_dtype(x: Tensor) -> torch.dtype:
    """float32 for half / bf16 / float32 inputs (losses stay exact under autocast), float64 kept."""
    return torch.promote_types(x.dtype, torch.float32)


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all but the batch axis, in fp32 (float64 inputs stay float64)."""
    return x.to(_work_dtype(x)).mean(dim=tuple(range(1, x.ndim)))


def randn(shape: tuple[int, ...], generator: Generators, device: torch.device, dtype=None) -> Tensor:
    """Standard normal ``shape = [B, ...]``; with a sequence of B generators, row b comes from the b-th."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in generator])


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """Per-sample ``[B]`` values → ``[B, 1, ...]`` to broadcast against ``like``."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


class Objective(ABC):
    """A noising process, its regression target and the samplers that invert it."""

    samplers: tuple[str, ...]  # the first one is the default
    learn_sigma: bool = False  # the model also predicts a variance (output channels doubled)

    @abstractmethod
    def training_loss(
        self,
        model_fn: ModelFn,
        x0: Tensor,
        model_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor | None]:
        """Returns ``loss`` ``[B]`` (fp32, what to minimize), ``mse`` ``[B]`` (its regression part),
        ``vlb`` ``[B]`` (bits/dim, only with ``learn_sigma``), ``hidden`` (the model's second output)
        and ``t`` ``[B]``."""

    @abstractmethod
    def sample_loop(
        self,
        denoise_fn: DenoiseFn,
        noise: Tensor,
        sampler: str,
        steps: int,
        generator: Generators,
    ) -> Tensor:
        """Map ``noise`` to data in ``steps`` model evaluations (Heun: about twice as many)."""

    def _check_sampler(self, sampler: str) -> None:
        if sampler not in self.samplers:
            raise ValueError(f"{type(self).__name__} samples with {self.samplers}, not {sampler!r}")


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats (closed form)."""
    return 0.5 * (
        logvar2 - logvar1 - 1.0 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def log_normal_mass(lo: Tensor, hi: Tensor) -> Tensor:
    """``log P(lo < Z < hi)`` for Z ~ N(0, 1), elementwise, accurate far into either tail.

    Written as ``log Φ(a) + log(1 - Φ(b)/Φ(a))`` from ``log_ndtr`` (mirrored, ``a = -lo``, in the upper
    tail): a plain ``Φ(hi) - Φ(lo)`` cancels near 1, and ``torch.special.ndtr`` itself loses relative
    accuracy below about -6 (1e-5 at -7, 0 at -8.7, where ``log_ndtr`` is exact).
    """
    upper = lo > 0
    log_a = torch.special.log_ndtr(torch.where(upper, -lo, hi))
    log_b = torch.special.log_ndtr(torch.where(upper, -hi, lo))
    ratio = -torch.expm1(log_b - log_a)  # 1 - Φ(b)/Φ(a) in (0, 1]
    return log_a + torch.log(ratio.clamp(min=torch.finfo(ratio.dtype).tiny))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Elementwise log-probability (nats) of the 8-bit bin of ``x`` under N(mean, e^{2·log_scale}).

    Ho et al. 2020's decoder L_0, as DiT applies it (to latents too): x in [-1, 1] binned with width
    2/255, the outer bins reaching ±∞. Probabilities are floored at ``LOG_PROB_FLOOR`` as DiT does.
    """
    inv_std = torch.exp(-log_scale)
    plus, minus = inv_std * (x - mean + 1.0 / 255.0), inv_std * (x - mean - 1.0 / 255.0)
    log_p = torch.where(
        x < -0.999,
        torch.special.log_ndtr(plus),  # first bin: P(X < x + 1/255)
        torch.where(x > 0.999, torch.special.log_ndtr(-minus), log_normal_mass(minus, plus)),
    )
    return log_p.clamp(min=math.log(LOG_PROB_FLOOR))


@dataclass(frozen=True)
class Schedule:
    """Float64 tables ``[S]`` of a DDPM chain; entry i is step i of the chain (0 = nearest the data).

    ``timesteps`` are what the model is told (the 1000-step scale). A respaced chain keeps a subset of
    the steps with ``β_i = 1 - ᾱ_i / ᾱ_{i-1}``, so its posterior and its learned-variance range are
    those of the shorter chain, as DiT's ``SpacedDiffusion``.
    """

    timesteps: Tensor
    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    posterior_variance: Tensor  # β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t); 0 at step 0
    posterior_log_variance_clipped: Tensor  # log β̃_t with step 0 taking step 1's value (log 0 = -∞)
    posterior_mean_coef1: Tensor  # μ̃_t = coef1 · x0 + coef2 · x_t
    posterior_mean_coef2: Tensor

    @classmethod
    def from_betas(cls, betas: Tensor, timesteps: Tensor) -> Schedule:
        betas = betas.to(torch.float64)
        ab = torch.cumprod(1.0 - betas, dim=0)
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
        clip_from = post_var[1:2] if len(post_var) > 1 else post_var[:1]
        return cls(
            timesteps=timesteps,
            betas=betas,
            alphas_cumprod=ab,
            alphas_cumprod_prev=ab_prev,
            posterior_variance=post_var,
            posterior_log_variance_clipped=torch.log(torch.cat([clip_from, post_var[1:]])),
            posterior_mean_coef1=betas * ab_prev.sqrt() / (1.0 - ab),
            posterior_mean_coef2=(1.0 - ab_prev) * (1.0 - betas).sqrt() / (1.0 - ab),
        )

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table ``name`` at steps ``t`` ``[B]`` broadcastable against ``like``: float32 as DiT (float64
        when ``like`` is)."""
        return _bcast(getattr(self, name).to(like.device)[t].to(_work_dtype(like)), like)

    def learned_log_variance(self, v: Tensor, t: Tensor) -> Tensor:
        """Log-variance of p(x_{t-1}|x_t) from v ``[B, ...]``: log β̃_t at v = -1, log β_t at v = +1."""
        frac = (v.to(_work_dtype(v)) + 1.0) / 2.0
        max_log = _bcast(self.betas.log().to(v.device)[t].to(frac.dtype), v)
        return frac * max_log + (1.0 - frac) * self.at("posterior_log_variance_clipped", t, v)


class DDPM(Objective):
    """ε-prediction with a linear β schedule (1e-4 … 0.02 over 1000 steps), as Latte and DiT.

    ``learn_sigma=False``: fixed small variance β̃ (DDPM ancestral sampling), loss = ε MSE.
    ``learn_sigma=True``: the model output has twice the channels (ε, v) on axis -3 (``[B, F, 2C,
    h, w]``), loss = ε MSE + VLB, and ancestral sampling uses the learned variance.
    """

    samplers = ("ddpm", "ddim")

    def __init__(
        self,
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        learn_sigma: bool = False,
    ) -> None:
        self.num_timesteps = num_timesteps
        self.learn_sigma = learn_sigma
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        self.schedule = Schedule.from_betas(betas, torch.arange(num_timesteps))

    @property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_t ``[T]`` (float64)."""
        return self.schedule.alphas_cumprod

    def split_output(self, out: Tensor, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """Model output → ``(ε, v)``: ``v`` is None without ``learn_sigma``; channels are axis -3."""
        channels = like.shape[-3] if like.ndim >= 3 else None
        if not self.learn_sigma:
            if out.shape != like.shape:
                raise ValueError(f"model output {tuple(out.shape)} should match x {tuple(like.shape)}")
            return out, None
        if channels is None or out.shape[-3] != 2 * channels:
            raise ValueError(
                f"learn_sigma: model output {tuple(out.shape)} needs 2x the channels (axis -3) of x "
                f"{tuple(like.shape)}; build the model with learn_sigma=True"
            )
        eps, v = out.chunk(2, dim=-3)
        return eps, v

    def training_loss(self, model_fn, x0, model_kwargs=None, generator=None):
        b = x0.shape[0]
        t = torch.randint(0, self.num_timesteps, (b,), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        ab = self.schedule.at("alphas_cumprod", t, x0)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        out, hidden = model_fn(x_t, t.float(), **(model_kwargs or {}))
        eps, v = self.split_output(out, x0)
        dtype = _work_dtype(x0)
        mse = mean_flat((eps.to(dtype) - noise.to(dtype)) ** 2)
        terms = {"loss": mse, "mse": mse, "hidden": hidden, "t": t}
        if v is not None:
            # Detached ε: the VLB trains only the variance, the mean is left to the MSE (DiT's frozen_out).
            vlb = self.vlb_bits(x0, x_t, t, eps.detach(), v) * (self.num_timesteps / VLB_REFERENCE_STEPS)
            terms.update(loss=mse + vlb, vlb=vlb)
        return terms

    def vlb_bits(self, x0: Tensor, x_t: Tensor, t: Tensor, eps: Tensor, v: Tensor) -> Tensor:
        """L_t of the variational bound per sample ``[B]``, in bits per dimension (fp32; float64 in, float64 out).

        ``KL(q(x_{t-1}|x_t, x0) ‖ p(x_{t-1}|x_t))`` for t > 0 and the discretized decoder NLL
        ``-log p(x0|x_1)`` at t = 0; p's mean comes from ε, its log-variance from v.
        """
        dtype = _work_dtype(x0)
        s, x0, x_t, eps = self.schedule, x0.to(dtype), x_t.to(dtype), eps.to(dtype)
        true_mean = s.at("posterior_mean_coef1", t, x0) * x0 + s.at("posterior_mean_coef2", t, x0) * x_t
        true_log_var = s.at("posterior_log_variance_clipped", t, x0)
        ab = s.at("alphas_cumprod", t, x0)
        pred_x0 = x_t / ab.sqrt() - (1.0 / ab - 1.0).sqrt() * eps
        mean = s.at("posterior_mean_coef1", t, x0) * pred_x0 + s.at("posterior_mean_coef2", t, x0) * x_t
        log_var = s.learned_log_variance(v, t)
        kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def respaced(self, steps: int) -> Schedule:
        """The chain on ``steps`` evenly spread timesteps (``steps = num_timesteps``: all of them)."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be in [1, {self.num_timesteps}], got {steps}")
        ts = torch.linspace(0, self.num_timesteps - 1, steps, dtype=torch.float64).round().long()
        ab = self.alphas_cumprod[ts]
        return Schedule.from_betas(1.0 - ab / torch.cat([ab.new_ones(1), ab[:-1]]), ts)

    def sample_loop(self, denoise_fn, noise, sampler, steps, generator):
        """Reverse process on the respaced chain (see :meth:`respaced`).

        ``ddpm`` is ancestral sampling, no noise on the last step, with the posterior variance β̃, or
        with the learned variance when ``learn_sigma``; ``ddim`` is deterministic DDIM (η = 0), which
        has no variance to learn: it uses the ε half only, as DiT's ``ddim_sample``.
        """
        self._check_sampler(sampler)
        chain = self.respaced(steps)
        x = noise
        for i in reversed(range(steps)):
            t = torch.full((x.shape[0],), float(chain.timesteps[i]), device=x.device)
            eps, v = self.split_output(denoise_fn(x, t), x)
            if sampler == "ddim":
                x = self._ddim_step(chain, i, x, eps)
            else:
                x = self._ancestral_step(chain, i, x, eps, v, generator)
        return x

    @staticmethod
    def _predict_x0(chain: Schedule, i: int, x: Tensor, eps: Tensor) -> Tensor:
        a_t = chain.alphas_cumprod[i].item()
        return (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5

    def _ddim_step(self, chain: Schedule, i: int, x: Tensor, eps: Tensor) -> Tensor:
        a_prev = chain.alphas_cumprod_prev[i].item()
        return a_prev**0.5 * self._predict_x0(chain, i, x, eps) + (1 - a_prev) ** 0.5 * eps

    def _ancestral_step(
        self,
        chain: Schedule,
        i: int,
        x: Tensor,
        eps: Tensor,
        v: Tensor | None,
        generator: Generators,
    ) -> Tensor:
        """x_{t-1} ~ N(μ̃(x0_pred, x_t), σ²): σ² = β̃ or the learned variance; the mean alone at i = 0."""
        x0 = self._predict_x0(chain, i, x, eps)
        x = chain.posterior_mean_coef1[i].item() * x0 + chain.posterior_mean_coef2[i].item() * x
        if i == 0:
            return x
        if v is None:
            std = chain.posterior_variance[i].item() ** 0.5
        else:
            step = torch.full((x.shape[0],), i, dtype=torch.long, device=v.device)
            std = torch.exp(0.5 * chain.learned_log_variance(v, step))
        return x + std * randn(x.shape, generator, x.device, x.dtype)


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
        mse = mean_flat((out.float() - (noise - x0).float()) ** 2)
        return {"loss": mse, "mse": mse, "hidden": hidden, "t": t}

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


def create_objective(name: Literal["ddpm", "flow"], *, learn_sigma: bool = False, **kwargs: Any) -> Objective:
    """``"ddpm"`` → :class:`DDPM`, ``"flow"`` → :class:`FlowMatching`; kwargs go to the constructor.

    ``learn_sigma`` exists for DDPM only (flow matching has no reverse-step variance to learn, and
    SiT/REPA do not learn one); asking for it with ``"flow"`` is a :class:`ConfigError`.
    """
    objectives: dict[str, type[Objective]] = {"ddpm": DDPM, "flow": FlowMatching}
    if name not in objectives:
        raise ValueError(f"unknown objective {name!r}; choose one of {list(objectives)}")
    if name == "ddpm":
        return DDPM(learn_sigma=learn_sigma, **kwargs)
    if learn_sigma:
        raise ConfigError("--learn-sigma needs --objective ddpm: flow matching has no variance to learn")
    return objectives[name](**kwargs)


def guided_denoise_fn(
    model: ModelFn, y: Tensor | None, cfg_scale: float, null_class: int | None, learn_sigma: bool = False
) -> DenoiseFn:
    """Wrap the model for sampling; ``cfg_scale != 1`` runs cond and null-class halves in one batch
    and returns ``uncond + s * (cond - uncond)``.

    With ``learn_sigma`` the output is ``[..., 2C, h, w]`` (ε, v on axis -3): guidance applies to ε
    only and v is the conditional half's, as DiT/Latte's ``forward_with_cfg``.
    """
    if cfg_scale == 1.0:
        return lambda x, t: model(x, t, y)[0]
    if y is None or null_class is None:
        raise ValueError(
            "classifier-free guidance (cfg_scale != 1) needs labels y and a class-conditional model"
        )
    y_both = torch.cat([y, torch.full_like(y, null_class)])

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), y_both)[0].chunk(2)
        if not learn_sigma:
            return uncond + cfg_scale * (cond - uncond)
        (eps_c, v_c), eps_u = cond.chunk(2, dim=-3), uncond.chunk(2, dim=-3)[0]
        return torch.cat([eps_u + cfg_scale * (eps_c - eps_u), v_c], dim=-3)

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
    generator: Generators = None,
) -> Tensor:
    """Draw latents ``shape = [B, F, C, h, w]`` from ``model`` (put in eval mode for the call).

    Deterministic given ``generator`` (one, or one per sample: see ``Generators``), which must live on
    the model's device. ``sampler`` defaults to
    the objective's first (``ddpm`` / ``euler``). A ``learn_sigma`` model needs a ``learn_sigma``
    objective and samples with its learned variance.
    """
    sampler = sampler or objective.samplers[0]
    device = next(model.parameters()).device
    learn_sigma = bool(getattr(model, "learn_sigma", False))
    if learn_sigma != objective.learn_sigma:
        raise ValueError(
            f"model learn_sigma={learn_sigma} but objective learn_sigma={objective.learn_sigma}: "
            "build both from the same setting"
        )
    null_class = model.null_class if getattr(model, "num_classes", 0) else None
    denoise = guided_denoise_fn(model, y, cfg_scale, null_class, learn_sigma)
    noise = randn(shape, generator, device)
    was_training = model.training
    model.eval()
    try:
        return objective.sample_loop(denoise, noise, sampler, steps, generator)
    finally:
        model.train(was_training)
