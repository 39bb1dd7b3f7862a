"""timm-style registry: a name maps to an :class:`EncoderEntry` (builder, package, native geometry, weights).

Backends register their entries at import (see ``dinov2.py`` and ``sam2_hiera.py``);
:func:`create_encoder` is the only constructor the rest of a4g uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch

from a4g.encoders.base import FrozenEncoder
from a4g.encoders.weights import RANDOM, WeightsArg, WeightSource, find_weights, sha256_file
from a4g.errors import ConfigError
from a4g.store.schema import EncoderSpec

RANDOM_INIT_SEED = 0
"""Random-init encoders are seeded, so two 'random' stores with equal fingerprints hold equal bytes."""


@dataclass(frozen=True)
class BuildOptions:
    """Per-run knobs a builder may use; each backend reads only its own."""

    dino_res: int = 224
    sam_res: int = 1024
    sam_output: str = "vision_features"
    compile: bool = False


Builder = Callable[["EncoderEntry", "Path | None", str, BuildOptions], FrozenEncoder]
"""builder(entry, weight_file or None for random init, weights_sha256, options) -> FrozenEncoder."""


@dataclass(frozen=True)
class EncoderEntry:
    """What the registry knows about an encoder before building it."""

    name: str
    package: str
    builder: Builder
    arch: str
    """timm model name, or sam2 config name."""
    channels: int
    """Channels of the default output."""
    stride: int
    """Input pixels per token (along one side) of the default output."""
    weights: WeightSource = WeightSource()
    overrides: tuple = ()
    """Backend-specific size overrides (timm kwargs as (key, value) pairs, or hydra override strings)."""
    random_only: bool = False
    """Toy sizes for tests and demos: no released weights exist, so only ``random_init=True`` works."""

    @property
    def package_version(self) -> str:
        return version(self.package)

    def spec(
        self, sha256: str, input_size: int, output: str, native_grid: tuple[int, int], channels: int
    ) -> EncoderSpec:
        """The spec of this entry as built: native tokens, before any resampling to a token grid."""
        return EncoderSpec(
            name=self.name,
            package=self.package,
            package_version=self.package_version,
            weights_sha256=sha256,
            input_size=input_size,
            output=output,
            native_grid=native_grid,
            resampling="none",
            channels=channels,
        )


_REGISTRY: dict[str, EncoderEntry] = {}


def register_encoder(entry: EncoderEntry) -> EncoderEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"encoder {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def list_encoders(include_random_only: bool = True) -> list[str]:
    """Registered encoder names, sorted; ``include_random_only=False`` hides the tiny test encoders."""
    return sorted(n for n, e in _REGISTRY.items() if include_random_only or not e.random_only)


def get_entry(name: str) -> EncoderEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(list_encoders())}") from None


def resolve_weights(name: str, weights: WeightsArg = None, weights_dir: str | Path | None = None) -> Path:
    """Local weight file of encoder `name` (explicit path or mapping, weights dir, hub cache) or
    :class:`~a4g.encoders.weights.MissingWeightsError`."""
    entry = get_entry(name)
    if entry.random_only:
        raise ConfigError(f"encoder {name!r} is a random-init test encoder; it has no weights")
    return find_weights(name, entry.weights, weights, weights_dir)


def create_encoder(
    name: str,
    *,
    weights: WeightsArg = None,
    weights_dir: str | Path | None = None,
    random_init: bool = False,
    dino_res: int = 224,
    sam_res: int = 1024,
    sam_output: str = "vision_features",
    device: str | torch.device = "cpu",
    compile: bool = False,
) -> FrozenEncoder:
    """Build a frozen encoder from local weights, or with seeded random weights if ``random_init``.

    `weights` is a file or a {encoder name: file} mapping (so one CLI flag can serve several
    encoders). `dino_res` / `sam_res` are the square input sides of DINOv2 (multiple of 14) and SAM2
    (multiple of 32); `sam_output` picks the SAM2 activation (see ``sam2_hiera.SAM_OUTPUTS``).
    `compile` wraps the encode step in ``torch.compile`` for GPU throughput runs.
    """
    entry = get_entry(name)
    options = BuildOptions(dino_res=dino_res, sam_res=sam_res, sam_output=sam_output, compile=compile)
    if random_init:
        explicit = weights.get(name) if isinstance(weights, Mapping) else weights
        if explicit is not None:
            raise ConfigError(f"encoder {name!r}: pass either weights or random_init, not both")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            encoder = entry.builder(entry, None, RANDOM, options)
    else:
        if entry.random_only:
            raise ConfigError(
                f"encoder {name!r} is a tiny test encoder without released weights; use random_init=True "
                "(--random-init)"
            )
        path = find_weights(name, entry.weights, weights, weights_dir)
        encoder = entry.builder(entry, path, sha256_file(path), options)
    return encoder.to(device)
