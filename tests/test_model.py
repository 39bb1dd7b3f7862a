"""V-DiT: registry, shapes, adaLN-Zero init, spatial/temporal mixing, hidden tokens, labels."""

import pytest
import torch
from torch import nn

from a4g.train.model import VDiTBlock, create_model, default_align_depth, get_arch, list_models

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
    block = VDiTBlock(16, 2, temporal=temporal)
    nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.1)
    x, c = torch.randn(2, 3, 5, 16), torch.randn(2, 16)
    x2 = x.clone()
    x2[:, 0, 0] += 1.0
    changed = (block(x, c) - block(x2, c)).abs().amax(dim=(0, 3)) > 0  # [F, N]
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
