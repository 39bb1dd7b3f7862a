"""Registry, DINOv2 (timm) and SAM2.1 Hiera (sam2) encoders: stored path == the library called directly.

Tiny random-weight sizes here; real sizes (ViT-S/14, Hiera-T) are covered with weight files in
test_encoders_weights.py.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import min_cosine_fp16, smooth_frames

from a4g.encoders import SAM_OUTPUTS, FrozenEncoder, create_encoder, get_entry, list_encoders
from a4g.encoders.dinov2 import MAX_INPUT, dino_res_for
from a4g.encoders.sam2_hiera import _TINY_OVERRIDES
from a4g.errors import ConfigError

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def test_registry_lists_released_and_tiny_encoders():
    names = list_encoders()
    for size in "sblg":
        assert f"dinov2_vit{size}14" in names and f"dinov2_vit{size}14_reg" in names
    for size in ("t", "s", "b+", "l"):
        assert f"sam2.1_hiera_{size}" in names
    tiny = {"dinov2_tiny", "dinov2_tiny_reg", "sam2.1_tiny"}
    assert tiny <= set(names)
    assert not tiny & set(list_encoders(include_random_only=False))
    assert get_entry("sam2.1_hiera_b+").arch == "configs/sam2.1/sam2.1_hiera_b+.yaml"
    assert get_entry("dinov2_vitl14_reg").arch == "vit_large_patch14_reg4_dinov2.lvd142m"
    with pytest.raises(KeyError, match="unknown encoder 'dinov3'"):
        get_entry("dinov3")


@pytest.mark.parametrize(
    ("name", "arch", "kwargs", "prefix"),
    [
        (
            "dinov2_tiny_reg",
            "vit_small_patch14_reg4_dinov2.lvd142m",
            dict(embed_dim=32, depth=2, num_heads=2),
            5,
        ),
        ("dinov2_tiny", "vit_small_patch14_dinov2.lvd142m", dict(embed_dim=32, depth=2, num_heads=2), 1),
    ],
)
def test_dinov2_matches_timm_forward_features(name, arch, kwargs, prefix):
    enc = create_encoder(name, random_init=True)
    ref = timm.create_model(arch, pretrained=False, img_size=224, num_classes=0, **kwargs).eval()
    ref.load_state_dict(enc.model.state_dict())
    frames = smooth_frames()

    x = enc.preprocess(frames)
    expected_x = F.interpolate(frames.float() / 255, size=(224, 224), mode="bicubic", antialias=True)
    expected_x = (expected_x.clamp(0, 1) - IMAGENET_MEAN) / IMAGENET_STD
    torch.testing.assert_close(x, expected_x)

    with torch.no_grad():
        full = ref.forward_features(x)
    assert full.shape[1] == 256 + prefix
    tokens = enc(frames)
    assert tokens.shape == (2, 256, ref.num_features) and tokens.dtype == torch.float32
    assert min_cosine_fp16(tokens, full[:, prefix:]) >= 0.999
    assert enc.spec.native_grid == (16, 16) and enc.spec.channels == ref.num_features
    assert enc.spec.output == "final_norm_patch_tokens" and enc.spec.input_size == 224
    assert enc.spec.package == "timm" and enc.spec.package_version == timm.__version__


@pytest.mark.parametrize(
    ("name", "overrides", "output", "pick"),
    [
        ("sam2.1_tiny", _TINY_OVERRIDES, "vision_features", lambda enc, x: enc(x)["vision_features"]),
        ("sam2.1_tiny", _TINY_OVERRIDES, "trunk_stage3", lambda enc, x: enc.trunk(x)[2]),
    ],
)
def test_sam2_matches_sam2_image_encoder(name, overrides, output, pick):
    from sam2.build_sam import build_sam2

    enc = create_encoder(name, random_init=True, sam_res=256, sam_output=output)
    ref = build_sam2(get_entry(name).arch, None, device="cpu", hydra_overrides_extra=list(overrides))
    ref.image_encoder.load_state_dict(enc.model.state_dict())
    frames = smooth_frames()
    x = enc.preprocess(frames)
    with torch.no_grad():
        expected = pick(ref.image_encoder, x)
    tokens = enc(frames)
    assert tokens.shape == (2, 16 * 16, expected.shape[1])
    assert min_cosine_fp16(tokens, expected.flatten(2).transpose(1, 2)) >= 0.999
    assert enc.spec.native_grid == (16, 16) and enc.spec.output == output and enc.spec.input_size == 256


def test_sam2_preprocess_matches_sam2_transforms():
    from sam2.utils.transforms import SAM2Transforms

    enc = create_encoder("sam2.1_tiny", random_init=True, sam_res=256)
    frames = smooth_frames(size=192)
    expected = SAM2Transforms(resolution=256, mask_threshold=0.0).transforms(frames.float() / 255)
    torch.testing.assert_close(enc.preprocess(frames), expected, atol=1e-5, rtol=1e-5)


def test_sam2_outputs_geometry_follows_spec():
    frames = smooth_frames(n=1)
    expected = {
        "vision_features": ((16, 16), 32),
        "trunk_stage1": ((64, 64), 16),
        "trunk_stage2": ((32, 32), 32),
        "trunk_stage3": ((16, 16), 64),
        "trunk_stage4": ((8, 8), 128),
    }
    assert set(expected) == set(SAM_OUTPUTS)
    for output, (grid, channels) in expected.items():
        enc = create_encoder("sam2.1_tiny", random_init=True, sam_res=256, sam_output=output)
        assert (enc.spec.native_grid, enc.spec.channels) == (grid, channels)
        assert enc(frames).shape == (1, grid[0] * grid[1], channels)
    enc = create_encoder("sam2.1_tiny", random_init=True, sam_res=512)
    assert enc.spec.native_grid == (32, 32) and enc(frames).shape == (1, 1024, 32)


def test_bad_resolutions_and_outputs_are_rejected():
    with pytest.raises(ValueError, match="multiple of 32"):
        create_encoder("sam2.1_tiny", random_init=True, sam_res=250)
    with pytest.raises(ValueError, match="sam_output 'neck'"):
        create_encoder("sam2.1_tiny", random_init=True, sam_res=256, sam_output="neck")
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        create_encoder("dinov2_tiny", random_init=True, dino_res=256)
    with pytest.raises(ValueError, match="random_init=True"):
        create_encoder("dinov2_tiny")
    with pytest.raises(ValueError, match="not both"):
        create_encoder("dinov2_vits14", random_init=True, weights="w.pth")


def test_dinov2_inputs_stop_at_the_released_position_grid():
    assert MAX_INPUT == timm.models.get_pretrained_cfg("vit_small_patch14_dinov2.lvd142m").input_size[-1]
    assert dino_res_for((16, 16), ["dinov2_vitb14", "sam2.1_hiera_t"]) == 224
    assert dino_res_for((37, 37), ["dinov2_tiny"]) == MAX_INPUT
    with pytest.raises(
        ConfigError, match=r"38x38 token grid, too large for DINOv2 \(532 px input, 518 px max\)"
    ):
        dino_res_for((38, 38), ["sam2.1_tiny", "dinov2_tiny_reg"])
    assert dino_res_for((38, 38), ["sam2.1_tiny", "unknown"]) == 532  # no DINOv2 asked for: no limit


def test_encoders_are_frozen_and_seeded():
    enc = create_encoder("dinov2_tiny", random_init=True)
    assert isinstance(enc, FrozenEncoder)
    assert not any(p.requires_grad for p in enc.parameters())
    parent = torch.nn.Sequential(enc).train()
    assert parent.training and not enc.training and not enc.model.training
    frames = smooth_frames(n=1)
    out = enc(frames)
    assert out.grad_fn is None
    again = create_encoder("dinov2_tiny", random_init=True)(frames)
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    assert enc.spec.weights_sha256 == "random"


def test_spec_for_token_grid_records_resampling():
    enc = create_encoder("sam2.1_tiny", random_init=True, sam_res=512)
    assert enc.spec.resampling == "none"
    assert enc.spec_for((16, 16)).resampling == "area"
    assert enc.spec_for((32, 32)).resampling == "none"
    assert enc.spec_for((64, 64)).resampling == "bilinear"
