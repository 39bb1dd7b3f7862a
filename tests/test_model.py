"""V-DiT: registry, shapes, adaLN-Zero init, spatial/temporal mixing, hidden tokens, labels, fixed
embeddings against the published MAE/DiT/Latte functions, the learned-variance head."""

import pytest
import torch
from published_refs import latte_temp_embed, mae_2d
from torch import nn

import a4g.train.model as model_module
from a4g.train.model import (
    VDiTBlock,
    create_model,
    default_align_depth,
    get_arch,
    list_models,
    sincos_1d,
    sincos_2d,
)

C, H, W = 4, 8, 8  # tiny latents: 4 channels, 8x8 → 4x4 = 16 tokens


def tiny(num_classes: int = 3, num_frames: int = 4, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_model(
        "VDiT-tiny", input_size=H, in_channels=C, num_frames=num_frames, num_classes=num_classes, **kwargs
    )


def randomize_modulation(model: nn.Module) -> None:
    """Un-zero the adaLN gates and output layer so every block actually acts."""
    g = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "adaLN_modulation" in name or "final_layer" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.1


def test_registry_and_align_depth_rule():
    assert list_models() == ["VDiT-tiny", "VDiT-S", "VDiT-B", "VDiT-L", "VDiT-XL"]
    xl = get_arch("VDiT-XL")
    assert (xl.depth, xl.embed_dim, xl.num_heads) == (28, 1152, 16)
    depths = {name: default_align_depth(name) for name in list_models()}
    assert depths == {"VDiT-tiny": 1, "VDiT-S": 3, "VDiT-B": 3, "VDiT-L": 7, "VDiT-XL": 8}
    with pytest.raises(ValueError, match="VDiT-XL"):
        get_arch("VDiT-XXL")


@pytest.mark.parametrize("name", list_models())
def test_every_size_shapes_on_meta(name):
    """Meta tensors give exact shapes of the full-size models without allocating their weights."""
    arch = get_arch(name)
    with torch.device("meta"):
        model = create_model(name, input_size=H, in_channels=C, num_frames=16, num_classes=101)
        x = torch.empty(2, 3, C, H, W)
        out, hidden = model(x, torch.zeros(2), torch.zeros(2, dtype=torch.long), align_depth=arch.depth)
    assert len(model.blocks) == arch.depth
    assert [b.temporal for b in model.blocks[:4]] == [False, True, False, True]
    assert out.shape == x.shape
    assert hidden.shape == (2, 3, (H // 2) * (W // 2), arch.embed_dim)


def test_small_model_real_forward():
    model = create_model("VDiT-S", input_size=4, in_channels=C, num_frames=2, num_classes=0)
    out, hidden = model(torch.randn(1, 2, C, 4, 4), torch.tensor([10.0]), align_depth=3)
    assert out.shape == (1, 2, C, 4, 4) and hidden.shape == (1, 2, 4, 384)


def test_adaln_zero_init_outputs_zero():
    model = tiny()
    out, hidden = model(torch.randn(2, 3, C, H, W), torch.tensor([1.0, 900.0]), torch.tensor([0, 2]))
    assert torch.count_nonzero(out) == 0
    assert hidden is None


def test_spatial_block_does_not_mix_frames_temporal_block_does():
    model = tiny(num_classes=0).eval()
    randomize_modulation(model)
    x = torch.randn(1, 3, C, H, W)
    x2 = x.clone()
    x2[:, 0] += 1.0  # perturb frame 0 only
    t = torch.tensor([500.0])
    after_spatial = [model(v, t, align_depth=1)[1] for v in (x, x2)]
    after_temporal = [model(v, t, align_depth=2)[1] for v in (x, x2)]
    assert not torch.allclose(after_spatial[0][:, 0], after_spatial[1][:, 0])
    torch.testing.assert_close(after_spatial[0][:, 1:], after_spatial[1][:, 1:], rtol=0, atol=0)
    assert not torch.allclose(after_temporal[0][:, 1:], after_temporal[1][:, 1:])


@pytest.mark.parametrize("temporal", [False, True])
def test_block_attends_along_one_axis_only(temporal):
    """Perturb (frame 0, token 0): a spatial block changes only frame 0, a temporal one only token 0."""
    torch.manual_seed(0)
    block = VDiTBlock(16, 2, temporal=temporal).double()  # float64: no change hides under rounding
    nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.1)
    x, c = torch.randn(2, 3, 5, 16, dtype=torch.float64), torch.randn(2, 16, dtype=torch.float64)
    x2 = x.clone()
    # A random direction, not a constant: LayerNorm removes a constant shift of a token exactly, so
    # "+= 1.0" would reach no other token at all.
    x2[:, 0, 0] += torch.randn(16, dtype=torch.float64)
    changed = (block(x, c) - block(x2, c)).abs().amax(dim=(0, 3)) > 1e-9  # [F, N]
    expected = torch.zeros(3, 5, dtype=torch.bool)
    if temporal:
        expected[:, 0] = True
    else:
        expected[0, :] = True
    assert torch.equal(changed, expected)


def test_align_depth_hidden_and_validation():
    model = tiny()
    x, t, y = torch.randn(2, 2, C, H, W), torch.tensor([5.0, 6.0]), torch.tensor([1, 2])
    for depth in (1, 4):
        _, hidden = model(x, t, y, align_depth=depth)
        assert hidden.shape == (2, 2, 16, 64)
    with pytest.raises(ValueError, match="align_depth"):
        model(x, t, y, align_depth=5)
    with pytest.raises(ValueError, match="num_frames"):
        model(torch.randn(1, 5, C, H, W), t[:1], y[:1])


def test_labels_and_null_class():
    model = tiny(num_classes=3, class_dropout_prob=1.0)
    randomize_modulation(model)
    assert model.null_class == 3
    x, t = torch.randn(2, 2, C, H, W), torch.tensor([100.0, 100.0])
    model.train()  # dropout prob 1: every label becomes the null class
    dropped, _ = model(x, t, torch.tensor([0, 1]))
    model.eval()
    null, _ = model(x, t, torch.tensor([3, 3]))
    cond, _ = model(x, t, torch.tensor([0, 1]))
    torch.testing.assert_close(dropped, null)
    assert not torch.allclose(cond, null)
    with pytest.raises(ValueError, match="labels"):
        model(x, t)
    uncond = tiny(num_classes=0)
    with pytest.raises(ValueError, match="labels"):
        uncond(x, t, torch.tensor([0, 1]))
    with pytest.raises(AttributeError):
        _ = uncond.null_class


def test_gradient_checkpointing_matches():
    grads = []
    for ckpt in (False, True):
        model = tiny(grad_checkpointing=ckpt)
        randomize_modulation(model)
        out, hidden = model(torch.ones(1, 2, C, H, W), torch.tensor([3.0]), torch.tensor([1]), align_depth=2)
        (out.square().mean() + hidden.mean()).backward()
        grads.append(model.patch_embed.weight.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


# ------------------------------------------------------------------ fixed embeddings vs the published code


# Both sides are float64 sin/cos of the same angles; numpy's and torch's libm may differ in the last
# bits (~1e-16). A transposed channel order differs by O(1).
SINCOS_TOL = 1e-12


@pytest.mark.parametrize(("dim", "gh", "gw"), [(64, 4, 4), (1152, 16, 16), (32, 3, 5)])
def test_pos_embed_is_mae_dit_channel_order(dim, gh, gw):
    ours = sincos_2d(dim, gh, gw)
    assert ours.dtype == torch.float64 and ours.shape == (gh * gw, dim)
    ref = torch.from_numpy(mae_2d(dim, gh, gw))
    torch.testing.assert_close(ours, ref, rtol=0, atol=SINCOS_TOL)
    # the old a4g order (rows in the first half) is a different embedding: this test can fail
    transposed = torch.cat([ref[:, dim // 2 :], ref[:, : dim // 2]], dim=1)
    assert (ours - transposed).abs().max() > 0.5


def test_temp_embed_is_latte_1d():
    """Latte's ``get_1d_sincos_temp_embed(dim, length)`` = MAE 1-D embedding of 0..length-1."""
    ours = sincos_1d(64, torch.arange(16))
    torch.testing.assert_close(ours, torch.from_numpy(latte_temp_embed(64, 16)), rtol=0, atol=SINCOS_TOL)


def test_model_buffers_are_the_float32_published_tables():
    """DiT/Latte store ``torch.from_numpy(table).float()``; a4g's buffers are the same float32 rounding."""
    model = tiny(num_frames=6)
    pos = torch.from_numpy(mae_2d(64, H // 2, W // 2)).float()
    temp = torch.from_numpy(latte_temp_embed(64, 6)).float()
    assert model.pos_embed.dtype == torch.float32
    # one float32 ulp (6e-8 near 1) allows a libm difference to flip a rounding
    torch.testing.assert_close(model.pos_embed, pos, rtol=0, atol=1.2e-7)
    torch.testing.assert_close(model.temp_embed[:, 0], temp, rtol=0, atol=1.2e-7)


# ------------------------------------------------------------------ learned variance head


def test_learn_sigma_doubles_channels_eps_first():
    """The ε half of a learn_sigma model is exactly the plain model when its ε rows are the plain ones.

    DiT's head lays out ``p*p*2C`` rows channel-fastest per patch pixel, so rows ``[p1, p2, :C]`` are ε.
    """
    plain, sigma = tiny(num_classes=0), tiny(num_classes=0, learn_sigma=True)
    assert (plain.out_channels, sigma.out_channels, sigma.learn_sigma) == (C, 2 * C, True)
    randomize_modulation(plain)
    state = {k: v for k, v in plain.state_dict().items() if not k.startswith("final_layer.linear")}
    sigma.load_state_dict(state, strict=False)
    p, d = plain.patch_size, plain.embed_dim
    with torch.no_grad():
        w = torch.randn(p, p, 2 * C, d)
        w[:, :, :C] = plain.final_layer.linear.weight.view(p, p, C, d)
        b = torch.randn(p, p, 2 * C)
        b[:, :, :C] = plain.final_layer.linear.bias.view(p, p, C)
        sigma.final_layer.linear.weight.copy_(w.reshape(-1, d))
        sigma.final_layer.linear.bias.copy_(b.reshape(-1))
    x, t = torch.randn(2, 3, C, H, W), torch.tensor([10.0, 700.0])
    out_plain, out_sigma = plain(x, t)[0], sigma(x, t)[0]
    assert out_sigma.shape == (2, 3, 2 * C, H, W)
    # Same weights, but a GEMM twice as wide: BLAS may block (and so sum) it in another order on
    # another CPU, so float32's tolerance rather than bit-equality.
    torch.testing.assert_close(out_sigma[:, :, :C], out_plain)
    assert not torch.allclose(out_sigma[:, :, C:], out_plain)


def test_model_runs_in_float64():
    """Float64 end to end (used by the reference comparisons): timestep features follow the weights."""
    model = tiny().double()
    out, hidden = model(
        torch.randn(1, 2, C, H, W, dtype=torch.float64), torch.tensor([3.0]), torch.tensor([1]), 2
    )
    assert out.dtype == hidden.dtype == torch.float64


def test_attention_splits_large_batches_with_identical_rows(monkeypatch):
    """Past SDPA_MAX_BATCH sequences, attention runs in batch chunks (CUDA's grid limit,
    pytorch#146704) and gives the rows one call gives. A limit of 5 stands in for 65,535: the tiny
    model's spatial blocks see 2 x 3 = 6 sequences and its temporal blocks 2 x 16 = 32 (5+5+...+2).

    Sequences are independent, so only a kernel's blocking could reorder a sum; float64 keeps any
    such reordering far below the 1e-12 asked for.
    """
    model = tiny()
    randomize_modulation(model)
    model.double()
    x = torch.randn(2, 3, C, H, W, dtype=torch.float64)
    t, y = torch.tensor([10.0, 700.0]), torch.tensor([0, 2])
    sdpa = torch.nn.functional.scaled_dot_product_attention
    batches: list[int] = []

    def spy(q, k, v, *args, **kwargs):
        batches.append(q.shape[0])
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        whole, hidden_whole = model(x, t, y, align_depth=2)
        assert max(batches) == 32  # unsplit: the temporal blocks' 2 x 16 sequences in one call
        batches.clear()
        monkeypatch.setattr(model_module, "SDPA_MAX_BATCH", 5)
        split, hidden_split = model(x, t, y, align_depth=2)
    assert max(batches) == 5 and 2 in batches  # split, the last chunk of 32 holding 2
    torch.testing.assert_close(split, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hidden_split, hidden_whole, rtol=1e-12, atol=1e-12)


def test_patch_size_comes_from_the_token_geometry():
    """The model's patch and the store's token grid derive from one constant (a4g.geometry)."""
    from a4g.geometry import PATCH_SIZE, token_grid_for

    model = tiny()
    assert model.patch_size == PATCH_SIZE
    assert model.grid_size == token_grid_for(H * 8, 8)  # a latent of H cells is a frame of 8H pixels
