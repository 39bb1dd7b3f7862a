"""Frozen encoders (DINOv2 via timm, SAM2.1 Hiera via sam2, SD VAE via diffusers), frame preprocessing
and fusion of their tokens into Align4Gen targets.

>>> enc = create_encoder("dinov2_vitb14", weights_dir="weights")      # doctest: +SKIP
>>> tokens = enc(square_frames(frames, 256))                          # doctest: +SKIP
"""

from a4g.encoders import dinov2, sam2_hiera  # noqa: F401  (register the entries)
from a4g.encoders.base import FrozenEncoder
from a4g.encoders.fusion import (
    fuse,
    fusion_spec,
    resample_tokens,
    resampling_mode,
    target_channel_chunk,
    with_token_grid,
)
from a4g.encoders.preprocess import square_frames
from a4g.encoders.registry import EncoderEntry, create_encoder, get_entry, list_encoders, resolve_weights
from a4g.encoders.sam2_hiera import SAM_OUTPUTS
from a4g.encoders.vae import FrozenVAE, create_vae
from a4g.encoders.weights import RANDOM, MissingWeightsError, sha256_file, weight_file_names

__all__ = [
    "RANDOM",
    "SAM_OUTPUTS",
    "EncoderEntry",
    "FrozenEncoder",
    "FrozenVAE",
    "MissingWeightsError",
    "create_encoder",
    "create_vae",
    "fuse",
    "fusion_spec",
    "get_entry",
    "list_encoders",
    "resample_tokens",
    "resampling_mode",
    "resolve_weights",
    "sha256_file",
    "square_frames",
    "target_channel_chunk",
    "weight_file_names",
    "with_token_grid",
]
