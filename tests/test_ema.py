"""The EMA's warm-up is diffusers' EMAModel's, checked against diffusers itself; the share of the initial
weights that `a4g sample` warns about follows the formula."""

import math

import pytest
import torch
from diffusers.training_utils import EMAModel
from torch import nn

from a4g.train.ema import EMA, NO_WARMUP, WARMUP, decay_at, initial_share


def trained_steps(model: nn.Module, steps: int, seed: int = 0):
    """The model's parameters after each of ``steps`` random updates (float64, seeded)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        yield model


@pytest.mark.parametrize("decay", [0.9999, 0.9])
def test_warm_up_matches_diffusers_ema_model(decay):
    live = nn.Linear(3, 2).double()
    ours = EMA(live, decay)  # keeps float32 weights, as training does
    theirs = EMAModel(live.parameters(), decay=decay)  # diffusers' defaults: the (1 + n) / (10 + n) warm-up
    for step, model in enumerate(trained_steps(live, 30)):
        assert ours.current_decay == pytest.approx(theirs.get_decay(step + 1), abs=0)
        ours.update(model)
        theirs.step(model.parameters())
    for a, b in zip(ours.model.parameters(), theirs.shadow_params, strict=True):
        # ours is float32: agreement to float32 resolution of the O(1..10) weights, not bitwise
        torch.testing.assert_close(a.double(), b, rtol=1e-6, atol=1e-5)
    assert ours.updates == theirs.optimization_step == 30


def test_decay_schedule_and_initial_share():
    assert decay_at(0, 0.9999) == 0.0  # the first update copies the live weights
    assert decay_at(1, 0.9999) == pytest.approx(2 / 11)
    assert decay_at(10**6, 0.9999) == 0.9999  # capped at the target decay
    assert decay_at(0, 0.9999, NO_WARMUP) == 0.9999
    # the numbers: a plain EMA at 0.9999 is still ~97 % its initial weights after 300 updates
    assert initial_share(300, 0.9999, NO_WARMUP) == pytest.approx(math.exp(300 * math.log(0.9999)))
    assert 0.97 < initial_share(300, 0.9999, NO_WARMUP) < 0.971
    assert initial_share(300, 0.9999, WARMUP) == 0.0 and initial_share(0, 0.9999, WARMUP) == 1.0


def test_update_count_survives_metadata_and_old_checkpoints_fall_back_to_the_step():
    ema = EMA(nn.Linear(2, 2), 0.99)
    for model in trained_steps(nn.Linear(2, 2), 5):
        ema.update(model)
    again = EMA(nn.Linear(2, 2), 0.99)
    again.load_metadata(ema.metadata(), fallback_updates=0)
    assert again.updates == 5 and again.current_decay == ema.current_decay
    again.load_metadata({}, fallback_updates=7)  # a checkpoint written before the count was kept
    assert again.updates == 7
