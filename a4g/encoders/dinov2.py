"""DINOv2 ViTs through timm: patch tokens after the final norm, CLS and register tokens dropped.

timm builds the model at ``img_size=dino_res`` (224 by default: 16x16 tokens at patch 14) and
resamples the released 37x37 position embedding to that grid once, at load time. Inputs are capped
at the released 37x37 grid (518 px, :data:`MAX_INPUT`): a larger grid would extrapolate positions
the model never saw. Weight files may be
Meta's original ``dinov2_vit*14*_pretrain.pth`` or timm's ``model.safetensors``; timm converts both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from timm.models import load_state_dict
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from a4g.encoders.base import FrozenEncoder
from a4g.encoders.registry import BuildOptions, EncoderEntry, get_entry, register_encoder
from a4g.encoders.weights import WeightSource, reading_weights
from a4g.errors import ConfigError

OUTPUT = "final_norm_patch_tokens"
PATCH = 14
"""Input pixels per token side of every DINOv2 ViT."""
MAX_INPUT = 37 * PATCH
"""518 px: the released position grid is 37x37 patches."""


class DinoV2Encoder(FrozenEncoder):
    def encode_preprocessed(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)
        return tokens[:, self.model.num_prefix_tokens :]


def build_dinov2(entry: EncoderEntry, path: Path | None, sha256: str, options: BuildOptions) -> DinoV2Encoder:
    size, patch = options.dino_res, entry.stride
    if size % patch:
        raise ConfigError(f"{entry.name}: dino_res {size} must be a multiple of the patch size {patch}")
    kwargs = dict(entry.overrides, img_size=size, num_classes=0)
    model = (
        timm.create_model(entry.arch, **kwargs) if path is None else _load_timm_vit(entry.arch, path, kwargs)
    )
    cfg = model.pretrained_cfg
    spec = entry.spec(sha256, size, OUTPUT, (size // patch, size // patch), model.num_features)
    return DinoV2Encoder(model, spec, cfg["mean"], cfg["std"], resize_mode="bicubic", compile=options.compile)


def is_dinov2(name: str) -> bool:
    """Whether registry entry `name` is built by this module (unknown names: False)."""
    try:
        return get_entry(name).builder is build_dinov2
    except KeyError:
        return False


def dino_res_for(token_grid: Sequence[int], encoders: Sequence[str]) -> int:
    """The ``dino_res`` whose native DINOv2 tokens lie on `token_grid` exactly (PATCH px per token).

    ConfigError when one of `encoders` is a DINOv2 and that input would pass :data:`MAX_INPUT`.
    """
    res = PATCH * int(token_grid[0])
    if res > MAX_INPUT and any(is_dinov2(n) for n in encoders):
        raise ConfigError(
            f"--size gives a {token_grid[0]}x{token_grid[1]} token grid, too large for DINOv2 "
            f"({res} px input, {MAX_INPUT} px max); use a smaller --size"
        )
    return res


def _load_timm_vit(arch: str, path: Path, kwargs: dict) -> VisionTransformer:
    """Build on the meta device (no random init: minutes on CPU for ViT-g), then load the file strictly.

    Same conversion as timm's own file loading (``checkpoint_filter_fn``: Meta key names, register
    tokens, position-embedding resampling to ``img_size``); `load_state_dict` reads safetensors or
    ``torch.load(weights_only=True)``.
    """
    with torch.device("meta"):
        model = timm.create_model(arch, **kwargs)
    model = model.to_empty(device="cpu")
    transient = [n for n, _ in model.named_buffers() if n not in model.state_dict()]
    if transient:  # to_empty leaves them uninitialised and no checkpoint restores them
        raise NotImplementedError(f"{arch}: non-persistent buffers {transient} are not supported")
    with reading_weights(path, arch):
        model.load_state_dict(checkpoint_filter_fn(load_state_dict(str(path)), model), strict=True)
    return model


_SIZES = {"s": ("small", 384), "b": ("base", 768), "l": ("large", 1024), "g": ("giant", 1536)}


def _register_released() -> None:
    for short, (word, channels) in _SIZES.items():
        for reg in (False, True):
            name = f"dinov2_vit{short}14" + ("_reg" if reg else "")
            arch = f"vit_{word}_patch14_{'reg4_' if reg else ''}dinov2.lvd142m"
            upstream = f"dinov2_vit{short}14{'_reg4' if reg else ''}_pretrain.pth"
            source = WeightSource(
                files=(upstream, f"{arch}.safetensors"),
                hub=((f"timm/{arch}", "model.safetensors"),),
                url=f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{short}14/{upstream} "
                f"or https://huggingface.co/timm/{arch} (model.safetensors)",
            )
            register_encoder(EncoderEntry(name, "timm", build_dinov2, arch, channels, PATCH, source))


def _register_tiny() -> None:
    """Same timm builder and forward path at toy width/depth, random init only."""
    tiny = (("embed_dim", 32), ("depth", 2), ("num_heads", 2))
    for name, arch in (
        ("dinov2_tiny", "vit_small_patch14_dinov2.lvd142m"),
        ("dinov2_tiny_reg", "vit_small_patch14_reg4_dinov2.lvd142m"),
    ):
        register_encoder(
            EncoderEntry(name, "timm", build_dinov2, arch, 32, PATCH, overrides=tiny, random_only=True)
        )


_register_released()
_register_tiny()
