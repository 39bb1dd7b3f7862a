"""Alignment projector (REPA init) and negative-cosine loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from a4g.train.align import Projector, alignment_loss
from a4g.train.model import create_model


def test_identical_inputs_give_minus_one():
    x = torch.randn(2, 3, 4, 8)
    loss, cos = alignment_loss(x, x * 3.0)  # scale-free: cosine, not MSE
    torch.testing.assert_close(loss, torch.tensor(-1.0))
    torch.testing.assert_close(cos, torch.tensor(1.0))
    loss, _ = alignment_loss(x, -x)
    torch.testing.assert_close(loss, torch.tensor(1.0))


def test_orthogonal_inputs_give_zero():
    a = torch.randn(2, 3, 4, 8)
    b = torch.randn(2, 3, 4, 8)
    b = b - (b * F.normalize(a, dim=-1)).sum(-1, keepdim=True) * F.normalize(a, dim=-1)  # Gram-Schmidt
    loss, cos = alignment_loss(a, b)
    assert abs(loss.item()) < 1e-6 and abs(cos.item()) < 1e-6


def test_mismatched_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="token grid"):
        alignment_loss(torch.randn(1, 2, 16, 8), torch.randn(1, 2, 64, 8))


def test_projector_shape_and_layers():
    proj = Projector(64, 40)
    assert [m.out_features for m in proj if isinstance(m, torch.nn.Linear)] == [2048, 2048, 40]
    assert Projector(64, 40, hidden_dim=16)(torch.randn(2, 3, 5, 64)).shape == (2, 3, 5, 40)


@pytest.mark.parametrize("weight", [0.5, 0.0])
def test_gradients_flow_through_projector_into_model(weight):
    torch.manual_seed(0)
    model = create_model("VDiT-tiny", input_size=8, in_channels=4, num_frames=2, num_classes=0)
    proj = Projector(64, 12, hidden_dim=32)
    _, hidden = model(torch.randn(2, 2, 4, 8, 8), torch.tensor([1.0, 2.0]), align_depth=2)
    target = F.normalize(torch.randn(2, 2, 16, 12), dim=-1)
    loss, _ = alignment_loss(proj(hidden), target)
    (weight * loss).backward()  # λ = 0 takes the same path, with zero gradients
    for p in list(proj.parameters()) + [model.patch_embed.weight]:
        assert p.grad is not None
        assert (p.grad.abs().sum() > 0) == (weight > 0)


def test_projector_init_is_repa_xavier_uniform_zero_bias():
    """REPA's initialize_weights: U(-a, a) with a = √(6 / (fan_in + fan_out)) and zero biases.

    A uniform on [-a, a] has std a/√3; with ≥ 1.5M weights per layer the empirical std's spread is
    0.03%, so 2% is a wide margin. PyTorch's default (bound 1/√fan_in) gives std ratios 0.48-0.68
    for these layers and fails it.
    """
    torch.manual_seed(0)
    proj = Projector(1152, 768, hidden_dim=2048)
    layers = [m for m in proj if isinstance(m, torch.nn.Linear)]
    for layer in layers:
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = layer.weight.detach()
        assert torch.count_nonzero(layer.bias) == 0
        assert w.abs().max() <= bound
        assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.02
        assert w.abs().max() > 0.99 * bound  # the whole range is used, not a narrower default
