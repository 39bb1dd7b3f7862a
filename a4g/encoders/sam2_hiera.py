"""SAM2.1 Hiera image encoders through the `sam2` package (image encoder only: trunk + FPN neck).

Only ``model.image_encoder`` of the sam2 config is instantiated (the memory and mask modules are
never used for features), and a full sam2 checkpoint is loaded strictly into it.

Outputs (``sam_output``):

- ``vision_features`` (default): the neck's stride-16 level, 256 channels; what SAM2's mask
  decoder consumes (before SAM2's image predictor adds ``no_mem_embed``).
- ``trunk_stage1`` .. ``trunk_stage4``: raw Hiera stage outputs at strides 4, 8, 16, 32 with the
  trunk's widths (Hiera-T: 96, 192, 384, 768).

Resolution: the Hiera position embedding is interpolated to the input grid on every call and windowed
attention pads, so any side that is a multiple of 32 works (``sam_res``; 1024 is SAM2's own).

``torch.compile``: the neck's sine position encoding keeps a Python dict cache that it fills on its
first call for a grid size. Filled inside the first compiled call, the dict no longer matched the
guards dynamo had recorded (``not ___dict_contains((2, 2), ...position_encoding.cache)`` in
``TORCH_LOGS=recompiles``), so the second call compiled the whole Hiera again (about a minute for
Hiera-B+ on a GPU node). :meth:`Sam2HieraEncoder.forward` fills it eagerly, on the input's device,
before any compiled call: one compile (tests/test_compile.py counts them).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import safetensors.torch
import torch
import torch.nn as nn

from a4g.encoders.base import FrozenEncoder
from a4g.encoders.registry import BuildOptions, EncoderEntry, register_encoder
from a4g.encoders.weights import WeightSource, reading_weights
from a4g.errors import ConfigError

SAM_OUTPUTS = ("vision_features", "trunk_stage1", "trunk_stage2", "trunk_stage3", "trunk_stage4")
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # sam2.utils.transforms.SAM2Transforms


class Sam2HieraEncoder(FrozenEncoder):
    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> native tokens [B, gh*gw, C]; the position cache is filled first (eager)."""
        x = self.preprocess(frames)
        if self.spec.output == "vision_features":  # the trunk outputs never reach the neck's encoding
            fill_position_cache(self.model.neck, x.shape[-1], x.device)
        return self._encode(x)

    def encode_preprocessed(self, x: torch.Tensor) -> torch.Tensor:
        output = self.spec.output
        if output == "vision_features":
            features = self.model(x)["vision_features"]
        else:
            features = self.model.trunk(x)[int(output[-1]) - 1]
        return features.flatten(2).transpose(1, 2)


def fill_position_cache(neck: nn.Module, side: int, device: torch.device) -> None:
    """Put the sine position encoding of every neck level of a `side`-pixel input in its cache, on `device`.

    Level i of the neck has stride 4 * 2**i (Hiera's stride-4 patch embedding, then one 2x pooling
    per stage), so its grid is side / (4 * 2**i) (``sam_res`` is a multiple of 32). An entry on
    another device is replaced: kept, the compiled graph would copy it to the input's device on
    every call (64 MB at the stride-4 level of a 1024 px Hiera-B+ input).
    """
    encoding = neck.position_encoding
    for level in range(len(neck.convs)):
        grid = side // (4 * 2**level)
        cached = encoding.cache.get((grid, grid))
        if cached is None or cached.device != device:
            encoding.cache.pop((grid, grid), None)
            encoding(torch.empty(1, 0, grid, grid, device=device))  # fills the cache (shape only)


def instantiate_image_encoder(config: str, overrides: tuple[str, ...] = ()) -> nn.Module:
    """sam2's ImageEncoder built from a packaged config (e.g. ``configs/sam2.1/sam2.1_hiera_t.yaml``)."""
    import sam2  # noqa: F401  (initialises sam2's Hydra config module)
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from sam2.modeling.position_encoding import PositionEmbeddingSine

    overrides = list(overrides)
    if "warmup_cache" in inspect.signature(PositionEmbeddingSine).parameters:
        # sam2 would fill the position cache for 1024 px on `cuda` (= cuda:0) whenever a GPU is
        # visible: in a rank on cuda:3 that opens a CUDA context on GPU 0 and fills the wrong sizes
        # for any other sam_res. Sam2HieraEncoder.forward fills it for the real input and device.
        overrides.append("++model.image_encoder.neck.position_encoding.warmup_cache=false")
    cfg = compose(config_name=config, overrides=overrides)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model.image_encoder, _recursive_=True)


def load_image_encoder_state(path: Path) -> dict[str, torch.Tensor]:
    """Image-encoder tensors of a sam2 checkpoint (``{"model": ...}`` .pt, plain dict, or safetensors)."""
    if path.suffix == ".safetensors":
        state = safetensors.torch.load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
    prefix = "image_encoder."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _output_geometry(encoder: nn.Module, output: str) -> tuple[int, int]:
    """(channels, stride) of an output name, read from the built modules."""
    trunk_channels = list(encoder.trunk.channel_list[::-1])  # stage1 .. stage4
    if output == "vision_features":
        return encoder.neck.d_model, 4 * 2 ** (len(trunk_channels) - 1 - encoder.scalp)
    stage = int(output[-1])
    return trunk_channels[stage - 1], 4 * 2 ** (stage - 1)


def build_sam2_hiera(
    entry: EncoderEntry, path: Path | None, sha256: str, options: BuildOptions
) -> Sam2HieraEncoder:
    size, output = options.sam_res, options.sam_output
    if size % 32:
        raise ConfigError(f"{entry.name}: sam_res {size} must be a multiple of 32")
    if output not in SAM_OUTPUTS:
        raise ConfigError(f"{entry.name}: sam_output {output!r} is not one of {', '.join(SAM_OUTPUTS)}")
    encoder = instantiate_image_encoder(entry.arch, entry.overrides)
    if path is not None:
        with reading_weights(path, entry.name):
            encoder.load_state_dict(load_image_encoder_state(path), strict=True)
    channels, stride = _output_geometry(encoder, output)
    spec = entry.spec(sha256, size, output, (size // stride, size // stride), channels)
    return Sam2HieraEncoder(encoder, spec, _MEAN, _STD, resize_mode="bilinear", compile=options.compile)


def _register_released() -> None:
    for short, word in (("t", "tiny"), ("s", "small"), ("b+", "base-plus"), ("l", "large")):
        name = f"sam2.1_hiera_{short}"
        upstream = f"sam2.1_hiera_{word.replace('-', '_')}.pt"
        source = WeightSource(
            files=(upstream,),
            hub=((f"facebook/sam2.1-hiera-{word}", upstream),),
            url=f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{upstream}",
        )
        config = f"configs/sam2.1/{name}.yaml"
        register_encoder(EncoderEntry(name, "sam2", build_sam2_hiera, config, 256, 16, source))


_TINY_OVERRIDES = (
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.image_encoder.neck.d_model=32",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=32",
)
"""Hiera-T's config shrunk by Hydra overrides (widths 16..128, 5 blocks, 32-channel neck)."""

_register_released()
register_encoder(
    EncoderEntry(
        "sam2.1_tiny",
        "sam2",
        build_sam2_hiera,
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        32,
        16,
        overrides=_TINY_OVERRIDES,
        random_only=True,
    )
)
