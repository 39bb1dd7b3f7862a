"""The frozen VAE: moments are exactly diffusers' posterior parameters; local directories and 'tiny'."""

from __future__ import annotations

import hashlib

import pytest
import torch
from diffusers import AutoencoderKL

from a4g.encoders import MissingWeightsError, create_vae
from a4g.encoders.vae import tiny_vae_config


def _frames(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )


def test_tiny_vae_has_sd_geometry():
    vae = create_vae("tiny", random_init=True)
    assert (vae.spec.name, vae.spec.weights_sha256) == ("tiny", "random")
    assert vae.spec.scaling_factor == pytest.approx(0.18215)
    assert (vae.spec.latent_channels, vae.spec.downsample) == (4, 8)
    moments = vae.encode_moments(_frames())
    assert moments.shape == (2, 8, 8, 8) and moments.dtype == torch.float32
    assert not any(p.requires_grad for p in vae.parameters())
    assert not torch.nn.Sequential(vae).train()[0].vae.training
    with pytest.raises(ValueError, match="random_init=True"):
        create_vae("tiny")
    with pytest.raises(ValueError, match="multiple of 8"):
        vae.encode_moments(_frames(size=60))


def test_local_vae_matches_diffusers_encode_and_decode(tmp_path):
    torch.manual_seed(3)
    source = AutoencoderKL(**tiny_vae_config()).eval()
    root = tmp_path / "my-vae"
    source.save_pretrained(str(root))
    weights = root / "diffusion_pytorch_model.safetensors"

    vae = create_vae(str(root))
    assert vae.spec.name == "my-vae"
    assert vae.spec.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()

    frames = _frames()
    x = frames.float() / 255 * 2 - 1
    with torch.no_grad():
        expected = source.encode(x).latent_dist.parameters
    moments = vae.encode_moments(frames)
    torch.testing.assert_close(moments, expected, rtol=1e-5, atol=1e-5)

    latents = moments[:, :4] * vae.spec.scaling_factor
    with torch.no_grad():
        decoded = source.decode(moments[:, :4]).sample
    expected_frames = ((decoded + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    out = vae.decode(latents)
    assert out.dtype == torch.uint8 and out.shape == frames.shape
    assert (out.int() - expected_frames.int()).abs().max() <= 1


def test_missing_vae_directory_names_expected_files(tmp_path):
    with pytest.raises(MissingWeightsError, match="config.json") as err:
        create_vae(str(tmp_path / "sd-vae-ft-ema"))
    assert "diffusion_pytorch_model.safetensors" in str(err.value) and "--random-init" in str(err.value)
    (tmp_path / "cfg-only").mkdir()
    AutoencoderKL(**tiny_vae_config()).save_config(str(tmp_path / "cfg-only"))
    with pytest.raises(MissingWeightsError, match="no VAE weights"):
        create_vae(str(tmp_path / "cfg-only"))
    assert create_vae(str(tmp_path / "cfg-only"), random_init=True).spec.weights_sha256 == "random"
