"""The feature store's metadata: the one contract between `a4g extract` and everything after it.

A store is valid for a training run exactly when its schema says so. The schema is a versioned,
validated pydantic model kept in the Zarr root attributes. Its `fingerprint` hashes every field that
determines the stored bytes, so two stores with the same fingerprint hold the same content, and
`compatible()` tells a training run, field by field, why a store does not fit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from a4g.errors import SchemaError
from a4g.extract.config import TargetDtype

FORMAT_VERSION = 1
"""Bumped whenever the on-disk layout changes; readers refuse other versions."""

# Fields that describe where or when a store was made, not what it holds.
# The decoder is among them: both decoders give identical frames (tests/test_video.py), so a store
# begun with decord may be resumed or matched on a node that only has PyAV.
_NOT_CONTENT = {("dataset", "root"), ("preprocess", "decoder"), ("code_version",), ("created",)}
# Fields added after format 1, left out of the fingerprint while they hold the value every older
# store implicitly has, so the fingerprints of stores written before them still recompute.
_ADDED_WITH_DEFAULT = {("layout", "target_dtype"): "float16", ("vae", "shift_factor"): None}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Model):
    """Which videos, in which order. `videos` is the sorted list of video ids the frames axis follows."""

    name: str
    root: str = Field(description="where the videos were read from (not part of the fingerprint)")
    split: str | None = None
    fold: int | None = None
    videos: list[str]
    video_list_hash: str = Field(description="sha256 over (id, frame count, file size) of every video")

    @model_validator(mode="after")
    def _sorted_unique(self) -> DatasetSpec:
        if list(self.videos) != sorted(set(self.videos)):
            raise ValueError("dataset.videos must be sorted and unique")
        return self


class PreprocessSpec(_Model):
    """How a decoded frame becomes the square RGB image every encoder and the VAE see."""

    resize: Literal["short_side"] = "short_side"
    crop: Literal["center"] = "center"
    size: int = Field(gt=0, description="side of the square frame in pixels")
    every: int = Field(default=1, ge=1, description="temporal stride: keep one frame in `every`")
    interpolation: Literal["bicubic", "bilinear", "area"] = "bicubic"
    decoder: str = Field(
        default="decord",
        description="decoder chosen for the frames (decord, pyav, pillow; with decord, files it would "
        "misnumber are read with pyav, see a4g.video); not part of the fingerprint",
    )


class EncoderSpec(_Model):
    """One frozen encoder as it was run."""

    name: str = Field(description="registry name, e.g. dinov2_vitb14")
    package: str = Field(description="library that implements it, e.g. timm")
    package_version: str
    weights_sha256: str = Field(description="sha256 of the weight file, or 'random'")
    input_size: int = Field(gt=0, description="square input side fed to the encoder")
    output: str = Field(description="which activation is stored, e.g. 'final_norm_patch_tokens'")
    native_grid: tuple[int, int]
    resampling: Literal["area", "bilinear", "bicubic", "none"] = "area"
    channels: int = Field(gt=0)


class FusionSpec(_Model):
    """How per-encoder tokens become one target vector per token."""

    normalization: Literal["l2_per_token"] = "l2_per_token"
    order: list[str]
    slices: dict[str, tuple[int, int]] = Field(description="encoder name -> [start, stop) channel slice")


class VAESpec(_Model):
    name: str
    weights_sha256: str
    scaling_factor: float
    latent_channels: int = Field(gt=0)
    downsample: int = Field(gt=0, description="spatial factor between frame and latent")
    stored: Literal["mean_logvar"] = Field(
        default="mean_logvar", description="latents hold diffusers' posterior parameters: mean ‖ log-variance"
    )
    shift_factor: float | None = Field(
        default=None, description="subtracted before scaling (SD3/FLUX-style VAEs); None: no shift (SD-VAE)"
    )

    def to_model_latents(self, z: Any) -> Any:
        """VAE latents → what the V-DiT trains on: ``(z - shift_factor) * scaling_factor``.

        Any array type (numpy in the data loader, torch in tests); the exact inverse of
        :meth:`from_model_latents`, so training and decoding agree for VAEs with a shift.
        """
        return (z if self.shift_factor is None else z - self.shift_factor) * self.scaling_factor

    def from_model_latents(self, latents: Any) -> Any:
        """What the V-DiT samples → VAE latents: ``latents / scaling_factor + shift_factor``."""
        z = latents / self.scaling_factor
        return z if self.shift_factor is None else z + self.shift_factor


class LayoutSpec(_Model):
    """Array dtype, chunking and compression; part of the content (it decides the bytes on disk)."""

    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    target_dtype: TargetDtype = Field(
        default="float16",
        description="float16: targets stored in `dtype` like the latents; int8: int8 values plus one "
        "float16 scale per token and encoder slice (array target_scales; see a4g/store/quant.py)",
    )
    chunk_frames: Literal[1] = 1
    shard_frames: int = Field(gt=0)
    target_channel_chunk: int = Field(gt=0, description="channels per inner chunk; divides every slice")
    codec: str = "zstd"
    codec_level: int = 3


class StoreSchema(_Model):
    """Everything a store holds, and how it was made."""

    format_version: int = FORMAT_VERSION
    dataset: DatasetSpec
    preprocess: PreprocessSpec
    encoders: list[EncoderSpec]
    fusion: FusionSpec
    vae: VAESpec
    token_grid: tuple[int, int]
    layout: LayoutSpec
    flip: bool = Field(default=False, description="store *_flip twins computed on mirrored frames")
    code_version: str
    created: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> StoreSchema:
        names = [e.name for e in self.encoders]
        if not names:
            raise ValueError("encoders: at least one encoder is required")
        if len(set(names)) != len(names):
            raise ValueError(f"encoders: duplicate names {names}")
        if self.fusion.order != names:
            raise ValueError(f"fusion.order {self.fusion.order} must equal the encoder order {names}")
        expected, start = {}, 0
        for enc in self.encoders:
            expected[enc.name] = (start, start + enc.channels)
            start += enc.channels
        if dict(self.fusion.slices) != expected:
            raise ValueError(f"fusion.slices {dict(self.fusion.slices)} must be {expected}")
        chunk = self.layout.target_channel_chunk
        if any((a % chunk) or (b % chunk) for a, b in expected.values()):
            raise ValueError(f"layout.target_channel_chunk {chunk} must divide every encoder boundary")
        if self.preprocess.size % self.vae.downsample:
            raise ValueError(
                f"preprocess.size {self.preprocess.size} is not a multiple of "
                f"vae.downsample {self.vae.downsample}"
            )
        return self

    # ---- derived sizes -------------------------------------------------------------------------

    @property
    def target_channels(self) -> int:
        return sum(e.channels for e in self.encoders)

    @property
    def num_tokens(self) -> int:
        return self.token_grid[0] * self.token_grid[1]

    @property
    def latent_size(self) -> tuple[int, int]:
        side = self.preprocess.size // self.vae.downsample
        return side, side

    @property
    def encoder_names(self) -> list[str]:
        return [e.name for e in self.encoders]

    @property
    def random_init(self) -> bool:
        """True when any encoder or the VAE ran with random weights (tests and demos only)."""
        return self.vae.weights_sha256 == "random" or any(e.weights_sha256 == "random" for e in self.encoders)

    def bytes_per_frame(self) -> int:
        """Uncompressed bytes one frame costs in the store (flip twins included)."""
        itemsize = 4 if self.layout.dtype == "float32" else 2
        h, w = self.latent_size
        per = 2 * self.vae.latent_channels * h * w * itemsize + self.target_bytes_per_frame()
        return per * (2 if self.flip else 1)

    def target_bytes_per_frame(self, target_dtype: str | None = None) -> int:
        """Uncompressed bytes of one frame's targets (one view): int8 adds a float16 scale per encoder."""
        kind = target_dtype or self.layout.target_dtype
        if kind == "int8":
            return self.num_tokens * (self.target_channels + 2 * len(self.encoders))
        return self.num_tokens * self.target_channels * (4 if self.layout.dtype == "float32" else 2)

    # ---- identity --------------------------------------------------------------------------------

    def content_dict(self) -> dict[str, Any]:
        """The fields that determine content: all of them but location, code version and time."""
        data = self.model_dump(mode="json")
        for path in _NOT_CONTENT:
            node = data
            for key in path[:-1]:
                node = node[key]
            node.pop(path[-1], None)
        for (section, key), legacy in _ADDED_WITH_DEFAULT.items():
            if data[section].get(key) == legacy:
                del data[section][key]
        return data

    @property
    def fingerprint(self) -> str:
        canonical = json.dumps(self.content_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["fingerprint"] = self.fingerprint
        return data

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> StoreSchema:
        """Parse and check a stored schema; raise SchemaError naming the bad field."""
        data = dict(data)
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise SchemaError(
                f"store format_version is {version!r}, this a4g reads version {FORMAT_VERSION}; "
                "re-extract the store or use the a4g release that wrote it"
            )
        stored_fp = data.pop("fingerprint", None)
        try:
            schema = cls.model_validate(data)
        except ValidationError as err:
            raise SchemaError(describe_validation_error(err)) from None
        if stored_fp is not None and stored_fp != schema.fingerprint:
            raise SchemaError(
                f"schema fingerprint mismatch: stored {stored_fp}, recomputed {schema.fingerprint}; "
                "the schema was edited or written by an incompatible version"
            )
        return schema


def describe_validation_error(err: ValidationError, what: str = "store schema") -> str:
    """One line per problem, each naming the dotted field path (``what``: the record, for the prefix)."""
    lines = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "<schema>"
        lines.append(f"{field}: {item['msg']}")
    return f"invalid {what}: " + "; ".join(lines)


def video_list_hash(entries: Iterable[tuple[str, int, int]]) -> str:
    """Content hash of a video list: (id, frame count, file size) per video, in id order."""
    h = hashlib.sha256()
    for vid, frames, size in sorted(entries):
        h.update(f"{vid}\t{frames}\t{size}\n".encode())
    return h.hexdigest()


# ---- compatibility ------------------------------------------------------------------------------


class Mismatch(BaseModel):
    """One reason a store does not fit what a run wants."""

    field: str
    store: Any
    wanted: Any

    def __str__(self) -> str:
        return f"{self.field}: store has {self.store!r}, run wants {self.wanted!r}"


def compatible(schema: StoreSchema, wanted: Mapping[str, Any]) -> list[Mismatch]:
    """Compare a store's schema with what a run needs; an empty list means it fits.

    `wanted` maps dotted field paths to required values, e.g. ``{"token_grid": (16, 16),
    "vae.latent_channels": 4, "preprocess.size": 256}``. Two keys are special:
    ``"encoders"`` is a list of encoder names that must all be present (a subset is fine, in any
    order), and ``"flip"`` set to True requires flip twins (False accepts any store).
    """
    found = schema.model_dump(mode="python")
    problems: list[Mismatch] = []
    for key, want in wanted.items():
        if key == "encoders":
            missing = [n for n in want if n not in schema.encoder_names]
            if missing:
                problems.append(Mismatch(field="encoders", store=schema.encoder_names, wanted=list(want)))
            continue
        if key == "flip":
            if want and not schema.flip:
                problems.append(Mismatch(field="flip", store=False, wanted=True))
            continue
        node: Any = found
        try:
            for part in key.split("."):
                node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError):
            raise KeyError(f"unknown schema field {key!r}") from None
        if _normalize(node) != _normalize(want):
            problems.append(Mismatch(field=key, store=node, wanted=want))
    return problems


def _normalize(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    return value
