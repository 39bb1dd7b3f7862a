"""Weight resolution (explicit file, weights dir, local hub cache), clear errors, and loading real-size
encoders from local files: recorded sha256 and outputs identical to the source libraries."""

from __future__ import annotations

import hashlib

import huggingface_hub.constants
import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from conftest import min_cosine_fp16, smooth_frames

from a4g.encoders import MissingWeightsError, create_encoder, resolve_weights, sha256_file, weight_file_names
from a4g.encoders.registry import get_entry
from a4g.errors import WeightsError


def _assert_loaded_like_source(enc, path, source_tokens) -> None:
    """The recorded sha256 is the file's, and tokens equal `source_tokens(preprocessed frames)`."""
    assert enc.spec.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    frames = smooth_frames(n=1)
    with torch.no_grad():
        expected = source_tokens(enc.preprocess(frames))
    tokens = enc(frames)
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)  # fp32 kernels may differ by ULPs
    assert min_cosine_fp16(tokens, expected) >= 0.999


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """Point the hub cache at an empty folder so a developer's real cache cannot satisfy a lookup."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_missing_weights_error_names_expected_files(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        create_encoder("dinov2_vitb14_reg", weights_dir=tmp_path)
    assert isinstance(err.value, WeightsError) and isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert "dinov2_vitb14_reg4_pretrain.pth" in msg and "dinov2_vitb14_reg.safetensors" in msg
    assert "timm/vit_base_patch14_reg4_dinov2.lvd142m" in msg and "--random-init" in msg
    assert str(tmp_path) in msg
    with pytest.raises(MissingWeightsError, match=r"sam2\.1_hiera_base_plus\.pt"):
        create_encoder("sam2.1_hiera_b+")
    with pytest.raises(MissingWeightsError, match="nope.pt"):
        create_encoder("sam2.1_hiera_l", weights=tmp_path / "nope.pt")


def test_weights_dir_and_mapping_resolution_order(tmp_path):
    upstream = tmp_path / "dinov2_vitl14_pretrain.pth"
    upstream.write_bytes(b"x")
    assert resolve_weights("dinov2_vitl14", weights_dir=tmp_path) == upstream
    own = tmp_path / "dinov2_vitl14.safetensors"
    own.write_bytes(b"y")
    assert resolve_weights("dinov2_vitl14", weights_dir=tmp_path) == own
    assert weight_file_names("dinov2_vitl14", get_entry("dinov2_vitl14").weights)[0] == own.name
    explicit = tmp_path / "elsewhere.pth"
    explicit.write_bytes(b"z")
    assert (
        resolve_weights("dinov2_vitl14", weights={"dinov2_vitl14": explicit}, weights_dir=tmp_path)
        == explicit
    )
    # a mapping without this encoder falls through to the weights dir
    assert resolve_weights("dinov2_vitl14", weights={"sam2.1_hiera_l": explicit}, weights_dir=tmp_path) == own


def test_local_hub_cache_is_used_without_network(empty_hub_cache):
    snapshot = empty_hub_cache / "models--facebook--sam2.1-hiera-small" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "sam2.1_hiera_small.pt").write_bytes(b"w")
    refs = empty_hub_cache / "models--facebook--sam2.1-hiera-small" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    assert resolve_weights("sam2.1_hiera_s") == snapshot / "sam2.1_hiera_small.pt"


def test_sha256_file_reads_in_chunks(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    assert sha256_file(path, chunk_bytes=1000) == hashlib.sha256(data).hexdigest()


def test_dinov2_vits14_from_local_file_matches_timm(tmp_path):
    arch = "vit_small_patch14_dinov2.lvd142m"
    torch.manual_seed(1)
    source = timm.create_model(arch, pretrained=False, img_size=224, num_classes=0).eval()
    with torch.no_grad():  # layer-scale starts at 1e-5; make the blocks matter
        for block in source.blocks:
            block.ls1.gamma.fill_(0.5)
            block.ls2.gamma.fill_(0.5)
    path = tmp_path / "dinov2_vits14.safetensors"
    safetensors.torch.save_file(source.state_dict(), str(path))

    enc = create_encoder("dinov2_vits14", weights_dir=tmp_path)
    _assert_loaded_like_source(enc, path, lambda x: source.forward_features(x)[:, 1:])


def test_sam2_hiera_t_from_local_checkpoint_matches_sam2(tmp_path):
    from sam2.build_sam import build_sam2

    config = "configs/sam2.1/sam2.1_hiera_t.yaml"
    torch.manual_seed(1)
    source = build_sam2(config, None, device="cpu")
    with torch.no_grad():
        source.image_encoder.trunk.pos_embed.normal_()
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": source.state_dict()}, path)

    enc = create_encoder("sam2.1_hiera_t", weights_dir=tmp_path, sam_res=256)
    assert enc.spec.native_grid == (16, 16) and enc.spec.channels == 256
    _assert_loaded_like_source(
        enc, path, lambda x: source.image_encoder(x)["vision_features"].flatten(2).transpose(1, 2)
    )


def test_meta_dinov2_checkpoint_loads_like_timm_file_loading(tmp_path):
    """Meta's release layout (518px position grid, mask_token) is converted and resampled as timm does."""
    arch = "vit_small_patch14_dinov2.lvd142m"
    torch.manual_seed(2)
    state = timm.create_model(arch, pretrained=False, img_size=518, num_classes=0).state_dict()
    state["mask_token"] = torch.zeros(1, 384)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(state, path)

    enc = create_encoder("dinov2_vits14", weights_dir=tmp_path)
    assert enc.model.pos_embed.shape == (1, 1 + 16 * 16, 384)
    ref = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, img_size=224)
    torch.testing.assert_close(enc.model.state_dict(), ref.state_dict(), rtol=0, atol=0)


def test_bf16_autocast_is_the_callers_choice():
    enc = create_encoder("dinov2_tiny", random_init=True)
    frames = smooth_frames(n=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = enc(frames)
    full = enc(frames)
    assert not torch.equal(low.float(), full)  # autocast really ran the matmuls in bf16
    assert F.cosine_similarity(low.float(), full, dim=-1).min() > 0.98
