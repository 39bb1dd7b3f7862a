"""Objectives (DDPM ε, flow v) and samplers, checked against models with exact analytic outputs; the
learned variance (DiT/Latte learn_sigma) against the published equations in float64."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch.distributions import Normal

from a4g.errors import ConfigError
from a4g.train.diffusion import (
    DDPM,
    FlowMatching,
    create_objective,
    discretized_gaussian_log_likelihood,
    guided_denoise_fn,
    normal_kl,
    sample,
)
from a4g.train.model import create_model

SHAPE = (2, 2, 4, 8, 8)  # [B, F, C, h, w]


def tiny(num_classes: int = 3):
    torch.manual_seed(0)
    return create_model("VDiT-tiny", input_size=8, in_channels=4, num_frames=2, num_classes=num_classes)


def randomize(model):
    g = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "adaLN_modulation" in name or "final_layer" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.1


def test_ddpm_schedule_is_linear_beta():
    ddpm = DDPM()
    ab = ddpm.alphas_cumprod
    assert ab.shape == (1000,)
    assert math.isclose(ab[0].item(), 1 - 1e-4)
    assert math.isclose((ab[-1] / ab[-2]).item(), 1 - 0.02)
    assert torch.all(ab[1:] < ab[:-1])


@pytest.mark.parametrize("name", ["ddpm", "flow"])
def test_training_loss_contract(name):
    objective = create_objective(name)
    model = tiny()
    x0 = torch.randn(SHAPE)
    kwargs = {"y": torch.tensor([0, 1]), "align_depth": 2}
    runs = [objective.training_loss(model, x0, kwargs, torch.Generator().manual_seed(7)) for _ in range(2)]
    out = runs[0]
    assert out["loss"].shape == (2,) and out["loss"].dtype == torch.float32
    assert out["hidden"].shape == (2, 2, 16, 64)
    assert out["t"].shape == (2,)
    torch.testing.assert_close(runs[0]["loss"], runs[1]["loss"])  # generator fixes t and noise
    # zero-init model predicts 0, so the loss is E|target|^2: |ε|^2 for DDPM, |ε - x0|^2 for flow
    expected = 1.0 if name == "ddpm" else 2.0
    assert abs(out["loss"].mean().item() - expected) < 0.3


def test_flow_logit_normal_times_in_unit_interval():
    t = FlowMatching("logit_normal").sample_t(4096, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert t.min() > 0 and t.max() < 1 and abs(t.median().item() - 0.5) < 0.03
    with pytest.raises(ValueError):
        FlowMatching("cosine")


@pytest.mark.parametrize("name", ["ddpm", "flow"])
def test_few_steps_reduce_loss_on_fixed_batch(name):
    objective = create_objective(name)
    model = tiny()
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    fit_fixed_batch(objective, model, x0, {"y": torch.tensor([0, 2])})


def fit_fixed_batch(objective, model, x0: torch.Tensor, kwargs: dict) -> None:
    """15 Adam steps on one batch with the same t and noise every call must cut the loss by 30 %."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return objective.training_loss(model, x0, kwargs, torch.Generator().manual_seed(11))["loss"].mean()

    first = loss().item()
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.7 * first


@pytest.mark.parametrize(
    ("name", "sampler"), [("ddpm", "ddpm"), ("ddpm", "ddim"), ("flow", "euler"), ("flow", "heun")]
)
def test_samplers_deterministic_and_shaped(name, sampler):
    model = tiny()
    randomize(model)
    objective = create_objective(name)
    y = torch.tensor([0, 1])

    def draw(seed: int, cfg: float = 1.0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return sample(model, objective, SHAPE, sampler, steps=3, y=y, cfg_scale=cfg, generator=g)

    a = draw(0)
    assert a.shape == SHAPE and torch.isfinite(a).all()
    torch.testing.assert_close(a, draw(0), rtol=0, atol=0)
    assert not torch.allclose(a, draw(1))
    assert not torch.allclose(a, draw(0, cfg=4.0))
    assert model.training  # mode restored after sampling
    with pytest.raises(ValueError):
        sample(model, objective, SHAPE, "nope", steps=2, y=y)


# Exact models for x0 ~ N(MU, S^2) per element; S = 0 is the point mass x0 = MU.
MU = 0.7


def exact_eps(ddpm: DDPM, s: float):
    def fn(x, t):
        a = ddpm.alphas_cumprod[t.long()].float().reshape(-1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * s**2 + 1 - a)

    return fn


def exact_velocity(s: float):
    def fn(x, t):
        t = (t / 1000).reshape(-1, 1)
        var = (1 - t) ** 2 * s**2 + t**2
        dev = x - (1 - t) * MU
        return t * dev / var - (MU + (1 - t) * s**2 * dev / var)  # E[ε | x_t] - E[x0 | x_t]

    return fn


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_ddpm_samplers_recover_point_mass(sampler):
    ddpm = DDPM()
    noise = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    x = ddpm.sample_loop(exact_eps(ddpm, 0.0), noise, sampler, 10, torch.Generator().manual_seed(1))
    torch.testing.assert_close(x, torch.full_like(x, MU), rtol=0, atol=1e-4)


def test_ddim_converges_to_probability_flow_map():
    """For Gaussian data DDIM approaches the exact noise→data map as steps grow (1000 = all steps)."""
    ddpm, s = DDPM(), 0.5
    z = torch.randn(4, 256, generator=torch.Generator().manual_seed(0))
    a_T = ddpm.alphas_cumprod[-1].item()
    exact = MU + s * (z - a_T**0.5 * MU) / (a_T * s**2 + 1 - a_T) ** 0.5
    errors = {
        n: (ddpm.sample_loop(exact_eps(ddpm, s), z, "ddim", n, None) - exact).abs().max() for n in (10, 1000)
    }
    assert errors[1000] < 1e-2
    assert errors[1000] < errors[10] / 5


def test_ddpm_ancestral_samples_target_distribution():
    ddpm, s = DDPM(), 0.5
    g = torch.Generator().manual_seed(0)
    x = ddpm.sample_loop(exact_eps(ddpm, s), torch.randn(8, 4096, generator=g), "ddpm", 250, g)
    assert abs(x.mean().item() - MU) < 0.02 and abs(x.std().item() - s) < 0.02


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_flow_ode_recovers_known_distribution(sampler):
    flow = FlowMatching()
    z = torch.randn(4, 256, generator=torch.Generator().manual_seed(0))
    point = flow.sample_loop(exact_velocity(0.0), z, sampler, 4, None)
    torch.testing.assert_close(point, torch.full_like(z, MU), rtol=0, atol=1e-5)  # straight paths: exact
    gauss = flow.sample_loop(exact_velocity(0.5), z, sampler, {"euler": 400, "heun": 40}[sampler], None)
    torch.testing.assert_close(gauss, MU + 0.5 * z, rtol=0, atol=1e-2)  # exact map: x0 = MU + S z


def test_heun_beats_euler_at_equal_steps():
    flow = FlowMatching()
    z = torch.randn(4, 256, generator=torch.Generator().manual_seed(0))
    err = {
        s: (flow.sample_loop(exact_velocity(0.5), z, s, 10, None) - (MU + 0.5 * z)).abs().max()
        for s in ("euler", "heun")
    }
    assert err["heun"] < err["euler"] / 3


def test_classifier_free_guidance_combines_halves():
    calls = []

    def model(x, t, y):
        calls.append(x.shape[0])
        return x * (y.float() + 1).reshape(-1, 1), None

    x, t, y = torch.ones(2, 3), torch.zeros(2), torch.tensor([0, 1])
    torch.testing.assert_close(guided_denoise_fn(model, y, 1.0, 5)(x, t), x * torch.tensor([[1.0], [2.0]]))
    guided = guided_denoise_fn(model, y, 3.0, 5)(x, t)
    uncond, cond = 6.0, torch.tensor([[1.0], [2.0]])
    torch.testing.assert_close(guided, (uncond + 3.0 * (cond - uncond)) * x)
    assert calls == [2, 4]  # scale 1: one plain pass; guidance: one doubled batch
    with pytest.raises(ValueError, match="labels"):
        guided_denoise_fn(model, None, 3.0, 5)


# ------------------------------------------------- learned variance against the published equations
# References in float64, straight from Ho et al. 2020 (eqs. 6-7: posterior q(x_{t-1} | x_t, x0)) and
# Nichol & Dhariwal 2021 (eq. 15: log Σ = v log β_t + (1 - v) log β̃_t with v = (out + 1)/2; eq. 16:
# L_hybrid = L_simple + L_vlb; L_t = KL(q ‖ p) in bits/dim, L_0 the discretized decoder NLL).
# Our code runs in float64 too when given float64, so the comparisons are tight: only the order of
# float64 operations differs (≤ 1e-12 here).
F64 = torch.float64
TIGHT = {"rtol": 1e-9, "atol": 1e-10}
VSHAPE = (6, 2, 3, 4, 4)  # [B, F, C, h, w]


def ref_tables(steps: int = 1000) -> dict[str, torch.Tensor]:
    """Respaced linear-β chain on ``steps`` evenly spread timesteps, float64 (steps=1000: the full one)."""
    ts = torch.linspace(0, 999, steps, dtype=F64).round().long()
    ab_full = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=F64), 0)
    ab = ab_full[ts]
    ab_prev = torch.cat([torch.ones(1, dtype=F64), ab[:-1]])
    beta = 1 - ab / ab_prev
    post_var = beta * (1 - ab_prev) / (1 - ab)
    # β̃_0 = 0: step 0 borrows step 1's (a 1-step chain has none; its variance is never used)
    post_log = torch.log(torch.cat([post_var[1:2] if steps > 1 else post_var[:1], post_var[1:]]))
    return {"ts": ts, "ab": ab, "ab_prev": ab_prev, "beta": beta, "post_var": post_var, "post_log": post_log}


def bc(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return v[t].reshape(-1, 1, 1, 1, 1)


def ref_p_mean_logvar(tab, t, x_t, eps, v):
    """Mean and log-variance of p(x_{t-1} | x_t) from (ε, v), per the two papers."""
    ab, ab_prev, beta = bc(tab["ab"], t), bc(tab["ab_prev"], t), bc(tab["beta"], t)
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * x_t
    frac = (v + 1) / 2
    return mean, frac * bc(tab["beta"].log(), t) + (1 - frac) * bc(tab["post_log"], t)


def ref_vlb_bits(x0, x_t, t, eps, v):
    """L_t in bits/dim: torch.distributions' Gaussian KL for t > 0, scipy's normal CDF for t = 0."""
    tab = ref_tables()
    ab, ab_prev, beta = bc(tab["ab"], t), bc(tab["ab_prev"], t), bc(tab["beta"], t)
    q_mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * x_t
    q_std = (0.5 * bc(tab["post_log"], t)).exp().expand_as(x0)
    p_mean, p_logvar = ref_p_mean_logvar(tab, t, x_t, eps, v)
    p_std = (0.5 * p_logvar).exp()
    kl = torch.distributions.kl_divergence(Normal(q_mean, q_std), Normal(p_mean, p_std))
    nll = -torch.from_numpy(ref_decoder_logp(x0.numpy(), p_mean.numpy(), p_std.numpy()))
    per_dim = torch.where(bc(t == 0, torch.arange(len(t))), nll, kl)
    return per_dim.mean(dim=(1, 2, 3, 4)) / math.log(2)


def ref_decoder_logp(x, mean, std):
    """log P(bin of x) for N(mean, std²), bins of width 2/255 in [-1, 1], outer bins open (Ho et al.)."""
    hi, lo = (x + 1 / 255 - mean) / std, (x - 1 / 255 - mean) / std
    norm = scipy.stats.norm
    # P(lo < Z < hi) evaluated where it does not cancel: by the survival function in the upper tail
    mass = np.where(lo > 0, norm.sf(lo) - norm.sf(hi), norm.cdf(hi) - norm.cdf(lo))
    mid = np.log(np.maximum(mass, 1e-12))
    first, last = scipy.stats.norm.logcdf(hi), scipy.stats.norm.logsf(lo)
    return np.where(
        x < -0.999,
        np.maximum(first, np.log(1e-12)),
        np.where(x > 0.999, np.maximum(last, np.log(1e-12)), mid),
    )


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = (torch.randn(1000, generator=g, dtype=F64) for _ in range(4))
    expected = torch.distributions.kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, **TIGHT)


def test_discretized_decoder_matches_scipy_normal_cdf():
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.tensor([-1.0, 1.0, -0.9995, 0.9995], dtype=F64),
            torch.rand(500, generator=g, dtype=F64) * 2 - 1,
        ]
    )
    mean = x + 0.05 * torch.randn(x.shape, generator=g, dtype=F64)
    log_scale = torch.empty(x.shape, dtype=F64).uniform_(-6, 0, generator=g)  # σ from 0.0025 to 1
    ours = discretized_gaussian_log_likelihood(x, mean, log_scale)
    ref = ref_decoder_logp(x.numpy(), mean.numpy(), log_scale.exp().numpy())
    torch.testing.assert_close(ours, torch.from_numpy(ref), rtol=1e-9, atol=1e-9)
    assert (ours < 0).all()


def test_vlb_bits_match_published_terms():
    """KL(q ‖ p) for t > 0 and the decoder NLL at t = 0, ε detached by the caller, v in and out of [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(VSHAPE, generator=g, dtype=F64) * 2 - 1).clamp(-0.99, 0.99)
    x0[0, 0, 0, 0] = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=F64)  # outer bins at t = 0
    t = torch.tensor([0, 1, 2, 10, 500, 999])
    ab = ref_tables()["ab"][t].reshape(-1, 1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(VSHAPE, generator=g, dtype=F64)
    eps = torch.randn(VSHAPE, generator=g, dtype=F64)
    v = torch.randn(VSHAPE, generator=g, dtype=F64) * 1.2  # unconstrained, as DiT
    ours = DDPM(learn_sigma=True).vlb_bits(x0, x_t, t, eps, v)
    assert ours.dtype == F64 and ours.shape == (6,)
    torch.testing.assert_close(ours, ref_vlb_bits(x0, x_t, t, eps, v), **TIGHT)


def test_hybrid_loss_is_mse_plus_vlb_with_frozen_mean():
    """loss = mse + vlb (× T/1000 = 1); the VLB reaches v only, the MSE reaches ε only."""
    ddpm = DDPM(learn_sigma=True)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(VSHAPE, generator=g, dtype=F64) * 2 - 1
    out = torch.randn(VSHAPE[0], 2, 6, 4, 4, generator=g, dtype=F64, requires_grad=True)
    seen = {}

    def model_fn(x_t, t):
        seen.update(x_t=x_t, t=t)
        return out, None

    terms = ddpm.training_loss(model_fn, x0, None, torch.Generator().manual_seed(3))
    t = seen["t"].long()
    ab = ref_tables()["ab"][t].reshape(-1, 1, 1, 1, 1)
    noise = (seen["x_t"] - ab.sqrt() * x0) / (1 - ab).sqrt()
    eps, v = out.detach()[:, :, :3], out.detach()[:, :, 3:]
    torch.testing.assert_close(terms["mse"], ((eps - noise) ** 2).mean(dim=(1, 2, 3, 4)), **TIGHT)
    torch.testing.assert_close(terms["vlb"], ref_vlb_bits(x0, seen["x_t"], t, eps, v), **TIGHT)
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vlb"], **TIGHT)
    (grad_vlb,) = torch.autograd.grad(terms["vlb"].sum(), out, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(terms["mse"].sum(), out)
    assert grad_vlb[:, :, :3].abs().max() == 0 and grad_vlb[:, :, 3:].abs().max() > 0
    assert grad_mse[:, :, 3:].abs().max() == 0 and grad_mse[:, :, :3].abs().max() > 0


def hand_sampler(denoise, noise, steps, seed):
    """Ancestral sampling with the learned variance, one step at a time from the references above."""
    tab, g, x = ref_tables(steps), torch.Generator().manual_seed(seed), noise
    for i in reversed(range(steps)):
        t = torch.full((x.shape[0],), i)
        out = denoise(x, tab["ts"][t].to(F64))
        mean, logvar = ref_p_mean_logvar(tab, t, x, out[:, :, :3], out[:, :, 3:])
        x = mean if i == 0 else mean + (0.5 * logvar).exp() * torch.randn(x.shape, generator=g, dtype=F64)
    return x


def fake_sigma_model(x, t):
    """Input-dependent ε and v, v partly outside [-1, 1]; deterministic."""
    scale = (t.to(F64) / 1000).reshape(-1, 1, 1, 1, 1)  # samplers pass float32 t (integers, exact)
    return torch.cat([0.3 * x + scale, 1.5 * torch.tanh(x - scale)], dim=2)


@pytest.mark.parametrize("steps", [1, 4, 25])
def test_learned_variance_sampler_matches_hand_steps(steps):
    noise = torch.randn(VSHAPE, generator=torch.Generator().manual_seed(0), dtype=F64)
    ours = DDPM(learn_sigma=True).sample_loop(
        fake_sigma_model, noise, "ddpm", steps, torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(ours, hand_sampler(fake_sigma_model, noise, steps, 5), **TIGHT)


def test_learned_variance_at_minus_one_is_the_fixed_small_sampler():
    """v ≡ -1 selects β̃ exactly (LEARNED_RANGE's lower end = FIXED_SMALL); v ≡ +1 is a different chain."""
    noise = torch.randn(VSHAPE, generator=torch.Generator().manual_seed(0), dtype=F64)

    def with_v(value):
        return lambda x, t: torch.cat([0.3 * x, torch.full_like(x, value)], dim=2)

    def run(objective, fn):
        return objective.sample_loop(fn, noise, "ddpm", 10, torch.Generator().manual_seed(1))

    fixed = run(DDPM(), lambda x, t: 0.3 * x)
    torch.testing.assert_close(run(DDPM(learn_sigma=True), with_v(-1.0)), fixed, **TIGHT)
    assert (run(DDPM(learn_sigma=True), with_v(1.0)) - fixed).abs().max() > 1e-3


def test_ddim_uses_the_eps_half_only():
    noise = torch.randn(VSHAPE, generator=torch.Generator().manual_seed(0), dtype=F64)
    a = DDPM(learn_sigma=True).sample_loop(fake_sigma_model, noise, "ddim", 5, None)
    b = DDPM().sample_loop(lambda x, t: fake_sigma_model(x, t)[:, :, :3], noise, "ddim", 5, None)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_guidance_applies_to_eps_half_only():
    """DiT/Latte forward_with_cfg: ε = uncond + s (cond - uncond); v is the conditional half's."""

    def model(x, t, y):
        lab = y.to(F64).reshape(-1, 1, 1, 1, 1)
        return torch.cat([x * (lab + 1), x * 0 + lab], dim=2), None

    x, t, y = torch.ones(2, 1, 3, 2, 2, dtype=F64), torch.zeros(2), torch.tensor([0, 1])
    out = guided_denoise_fn(model, y, 4.0, 5, learn_sigma=True)(x, t)
    cond = torch.tensor([1.0, 2.0], dtype=F64).reshape(-1, 1, 1, 1, 1)
    torch.testing.assert_close(out[:, :, :3], 6.0 + 4.0 * (cond - 6.0) * x)
    torch.testing.assert_close(
        out[:, :, 3:], torch.tensor([0.0, 1.0], dtype=F64).reshape(-1, 1, 1, 1, 1).expand(2, 1, 3, 2, 2)
    )


def test_learn_sigma_settings_must_agree():
    model = tiny()
    with pytest.raises(ValueError, match="learn_sigma"):
        sample(model, DDPM(learn_sigma=True), SHAPE, steps=2, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="2x the channels"):
        DDPM(learn_sigma=True).training_loss(model, torch.randn(SHAPE), {"y": torch.tensor([0, 1])})
    with pytest.raises(ConfigError, match="--learn-sigma"):
        create_objective("flow", learn_sigma=True)
    assert create_objective("ddpm", learn_sigma=True).learn_sigma


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_learn_sigma_model_trains_and_samples(sampler):
    torch.manual_seed(0)
    model = create_model(
        "VDiT-tiny", input_size=8, in_channels=4, num_frames=2, num_classes=3, learn_sigma=True
    )
    objective = create_objective("ddpm", learn_sigma=True)
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    kwargs = {"y": torch.tensor([0, 2])}
    fit_fixed_batch(objective, model, x0, kwargs)
    g = torch.Generator().manual_seed(0)
    z = sample(model, objective, SHAPE, sampler, steps=3, y=kwargs["y"], cfg_scale=2.0, generator=g)
    assert z.shape == SHAPE and torch.isfinite(z).all()
