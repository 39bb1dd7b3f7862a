"""The frozen SD-style VAE (diffusers ``AutoencoderKL``): posterior moments for the store, decoding for samples.

The store keeps diffusers' posterior parameters (mean ‖ logvar, unclamped, exactly
``encode(x).latent_dist.parameters``) so training can draw a fresh latent every step. Training works
on ``(z - shift_factor) * scaling_factor`` (``VAESpec.to_model_latents``; no shift for SD-VAE, one for
SD3-style VAEs); :meth:`FrozenVAE.decode` inverts exactly that (``VAESpec.from_model_latents``).

Precision is the caller's (``torch.autocast``); SD VAEs overflow in float16, so use bfloat16 or
float32 for them.

``compile=True`` (``a4g extract --compile``) compiles the encode step, uint8 conversion included. On
an H100 (bf16, random weights) the SD-VAE at 256 px ran 528 frames/s eager and 1,362 compiled; with
DINOv2-B (7,974) and SAM2.1-B+ (309) compiled, an eager VAE holds the three together to
1 / (1/7,974 + 1/309 + 1/528) = 190 frames/s, under the 230 ``--compile`` is for; compiled, 244.
Decoding (sampling) stays eager.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn as nn
from diffusers import AutoencoderKL

from a4g.encoders.registry import RANDOM_INIT_SEED
from a4g.encoders.weights import RANDOM, MissingWeightsError, reading_weights, sha256_file
from a4g.errors import ConfigError
from a4g.store.schema import VAESpec

TINY = "tiny"
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_WHERE = (
    "https://huggingface.co/stabilityai/sd-vae-ft-ema (config.json + diffusion_pytorch_model.safetensors)"
)


def tiny_vae_config() -> dict:
    """A toy AutoencoderKL with the SD geometry (/8, 4 latent channels, 0.18215), for tests and demos."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=256,
        scaling_factor=0.18215,
    )


def sd_vae_config() -> dict:
    """The sd-vae-ft-ema architecture: with `random_init` it measures real-size speed without weights."""
    return dict(
        tiny_vae_config(), block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32
    )


def write_vae_config(path: str | Path, config: dict) -> Path:
    """A diffusers directory holding only `config.json`: loadable by `create_vae(path, random_init=True)`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **config}))
    return path


class FrozenVAE(nn.Module):
    """Frozen AutoencoderKL with uint8-frame in/out and the :class:`VAESpec` it was run with."""

    spec: VAESpec

    def __init__(self, vae: AutoencoderKL, spec: VAESpec, compile: bool = False) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False)
        self.spec = spec
        self.eval()
        # Compiled lazily at the first call, so after `.to(device)`; a bound method keeps state_dict keys.
        self._moments = torch.compile(self.moments_of) if compile else self.moments_of

    def train(self, mode: bool = True) -> FrozenVAE:
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @torch.no_grad()
    def encode_moments(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> posterior parameters [B, 2*C, S/8, S/8] (mean ‖ logvar)."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected uint8 frames [B, 3, S, S], got {frames.dtype} {tuple(frames.shape)}")
        if frames.shape[-1] % self.spec.downsample or frames.shape[-2] % self.spec.downsample:
            raise ValueError(
                f"frame side must be a multiple of {self.spec.downsample}, got {tuple(frames.shape)}"
            )
        return self._moments(frames.to(self.device, non_blocking=True))

    def moments_of(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] on the VAE's device -> [B, 2*C, S/8, S/8], unchecked (the compiled step)."""
        x = frames.float() / 127.5 - 1.0
        return self.vae.encode(x).latent_dist.parameters

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model latents ((z - shift) * scale) [B, C, h, w] -> uint8 frames [B, 3, 8h, 8w]."""
        z = self.spec.from_model_latents(latents.to(self.device))  # the inverse of what training read
        x = self.vae.decode(z).sample.float()
        return x.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def create_vae(
    name_or_path: str | Path,
    *,
    random_init: bool = False,
    device: str | torch.device = "cpu",
    compile: bool = False,
) -> FrozenVAE:
    """A local diffusers VAE directory (config.json + weights), a Hugging Face repo id in the local cache
    (:func:`resolve_vae_dir`), or ``"tiny"`` (random init only; use ``./tiny`` for a directory of that name). ``compile`` compiles :meth:`FrozenVAE.encode_moments`.

    The spec's name is the directory's name (not its location) so equal weights give equal schemas.
    ``random_init`` with a directory keeps its config but draws seeded random weights.
    """
    if isinstance(name_or_path, str) and name_or_path == TINY:
        if not random_init:
            raise ConfigError(
                "the 'tiny' VAE is a random-init test VAE without weights (random_init=True): it serves only "
                "stores made with `a4g extract --vae tiny --random-init`"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            vae = AutoencoderKL(**tiny_vae_config())
        return _wrap(vae, TINY, RANDOM, compile).to(device)
    root, name = resolve_vae_dir(name_or_path)
    if not (root / "config.json").is_file():
        raise MissingWeightsError(
            f"no VAE at {str(root)!r}: expected a diffusers directory with config.json and "
            f"{_WEIGHT_FILES[0]}; get it from {_WHERE} (test runs: `a4g extract --vae tiny --random-init`)"
        )
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(root)))
        return _wrap(vae, name, RANDOM, compile).to(device)
    weight_file = next((root / f for f in _WEIGHT_FILES if (root / f).is_file()), None)
    if weight_file is None:
        raise MissingWeightsError(
            f"no VAE weights in {str(root)!r}: expected {' or '.join(_WEIGHT_FILES)}; get them from {_WHERE} "
            "(test runs: `a4g extract --random-init`)"
        )
    with reading_weights(weight_file, f"VAE {root.name}"):
        vae = AutoencoderKL.from_pretrained(
            str(root), local_files_only=True, use_safetensors=weight_file.suffix == ".safetensors"
        )
    return _wrap(vae, name, sha256_file(weight_file), compile).to(device)


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_vae_dir(name_or_path: str | Path) -> tuple[Path, str]:
    """``--vae`` as (diffusers directory, the name recorded in the spec).

    A local directory wins; otherwise ``org/name`` is looked up in the local Hugging Face cache, read
    only (``snapshot_download(local_files_only=True)``), as the encoders' weights are. A repo that keeps
    its VAE in a ``vae/`` subfolder (SD3-style pipelines) gives that folder. The name is the repo's
    (``sd-vae-ft-ema``), the same as a local copy's directory name, so both give equal store schemas.
    """
    root = Path(name_or_path).expanduser()
    text = str(name_or_path)
    if root.exists() or not _REPO_ID.match(text):
        return root, root.resolve().name
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(text, local_files_only=True))
    except LocalEntryNotFoundError:
        raise MissingWeightsError(
            f"VAE {text!r} is neither a local directory nor in the local Hugging Face cache "
            f"({hub_cache_dir()}); nothing downloads at run time: fetch it once with `hf download {text}` "
            "(or set HF_HUB_CACHE), or pass a local diffusers directory"
        ) from None
    if not (snapshot / "config.json").is_file() and (snapshot / "vae" / "config.json").is_file():
        snapshot = snapshot / "vae"
    return snapshot, text.rsplit("/", 1)[1]


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _wrap(vae: AutoencoderKL, name: str, sha256: str, compile: bool = False) -> FrozenVAE:
    cfg = vae.config
    spec = VAESpec(
        name=name,
        weights_sha256=sha256,
        scaling_factor=float(cfg.scaling_factor),
        latent_channels=int(cfg.latent_channels),
        downsample=2 ** (len(cfg.block_out_channels) - 1),
        shift_factor=None if cfg.get("shift_factor") is None else float(cfg.shift_factor),
    )
    return FrozenVAE(vae, spec, compile)
