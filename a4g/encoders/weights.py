"""Where encoder weights come from: an explicit file, a weights directory, or a local hub cache.

Nothing here touches the network. The order is fixed so a store's provenance is predictable:

1. an explicit path (``weights="file"`` or ``weights={"dinov2_vitb14": "file"}``);
2. ``weights_dir/<file>`` for the first existing file of the entry's documented names, which are
   ``<registry name>.safetensors|.pth|.pt`` followed by the upstream release's own file name
   (e.g. ``dinov2_vitb14_pretrain.pth``, ``sam2.1_hiera_base_plus.pt``);
3. the local Hugging Face hub cache (``HF_HUB_CACHE``), looked up with ``try_to_load_from_cache``
   which only reads the disk.

Anything else is a :class:`MissingWeightsError` that names the files it looked for and where to get
them. Every resolved file is hashed (sha256) so the store schema records exactly which weights ran.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError

from a4g.errors import A4GError, WeightsError

RANDOM = "random"
"""`weights_sha256` of a randomly initialised encoder (tests and demos only)."""

_OWN_SUFFIXES = (".safetensors", ".pth", ".pt")


class MissingWeightsError(WeightsError):
    """No local weight file for an encoder or VAE; the message says which files would do and where to get them."""


# What torch.load / safetensors / load_state_dict raise for a file that is not the network's weights.
_READ_ERRORS = (
    RuntimeError,
    ValueError,
    KeyError,
    OSError,
    EOFError,
    pickle.UnpicklingError,
    SafetensorError,
)


@contextlib.contextmanager
def reading_weights(path: Path, name: str) -> Iterator[None]:
    """Turn a failure to read or fit a weights file into one WeightsError naming the file.

    torch, timm and safetensors report a text file or a checkpoint of another network in their own
    terms (``KeyError: 101`` from the unpickler, a state-dict key diff); a person needs to hear which
    file is wrong and for which encoder.
    """
    try:
        yield
    except A4GError:
        raise
    except _READ_ERRORS as err:
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        if code := refused_global(_with_causes(err)):  # torch's own text would suggest weights_only=False
            raise WeightsError(
                f"{path} is refused for {name!r}: loading it would run code stored in the file ({code}); "
                "use the official weights file, or save the state dict alone or as .safetensors"
            ) from None
        raise WeightsError(f"{path} is not a usable weights file for {name!r} ({detail[:300]})") from None


# How torch's weights-only unpickler names the global it refused ("Unsupported global: GLOBAL x.y",
# "Unsupported globals: x.y", "unsupported GLOBAL x.y whose module x is blocked").
_UNSAFE_GLOBAL = re.compile(r"[Uu]nsupported (?:globals?: (?:GLOBAL )?|GLOBAL )([\w.]+)")


def _with_causes(err: BaseException) -> str:
    """The text of an error and of those it was raised from (diffusers wraps torch's in an OSError)."""
    texts, seen = [], 0
    while err is not None and seen < 5:
        texts.append(str(err))
        err, seen = err.__cause__ or err.__context__, seen + 1
    return " ".join(texts)


def refused_global(text: str) -> str | None:
    """The code a weights-only ``torch.load`` refused to run (e.g. ``posix.system``), from its error text."""
    found = _UNSAFE_GLOBAL.search(text)
    return found.group(1).rstrip(".") if found else None  # "posix.system." ends a sentence


@dataclass(frozen=True)
class WeightSource:
    """Where an entry's weights may live locally and where a user can download them."""

    files: tuple[str, ...] = ()
    """Upstream file names accepted in a weights directory (after ``<name>.<suffix>``)."""
    hub: tuple[tuple[str, str], ...] = ()
    """(repo_id, filename) pairs looked up in the local Hugging Face cache, in order."""
    url: str = ""
    """Human-readable download location for the error message."""
    extra: tuple[str, ...] = field(default=())
    """Further hints for the error message (e.g. how to rename a hub file)."""


WeightsArg = str | Path | Mapping[str, str | Path] | None


def weight_file_names(name: str, source: WeightSource) -> list[str]:
    """File names accepted for `name` inside a weights directory, in lookup order."""
    return [f"{name}{suffix}" for suffix in _OWN_SUFFIXES] + list(source.files)


def find_weights(
    name: str,
    source: WeightSource,
    weights: WeightsArg = None,
    weights_dir: str | Path | None = None,
) -> Path:
    """Find the local weight file for encoder `name`, or raise :class:`MissingWeightsError`."""
    explicit = weights.get(name) if isinstance(weights, Mapping) else weights
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"weights for {name!r}: file {str(path)!r} does not exist")
        return path
    names = weight_file_names(name, source)
    if weights_dir is not None:
        for fname in names:
            path = Path(weights_dir).expanduser() / fname
            if path.is_file():
                return path
    cached = _hub_cached(source.hub)
    if cached is not None:
        return cached
    raise MissingWeightsError(_missing_message(name, source, names, weights_dir))


def _hub_cached(candidates: Sequence[tuple[str, str]]) -> Path | None:
    """First candidate already in the local hub cache; never downloads."""
    if not candidates:
        return None
    from huggingface_hub import try_to_load_from_cache

    for repo_id, filename in candidates:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _missing_message(
    name: str, source: WeightSource, names: list[str], weights_dir: str | Path | None
) -> str:
    where = (
        f"in --weights-dir {str(weights_dir)!r}" if weights_dir is not None else "(no --weights-dir given)"
    )
    lines = [
        f"no weights found for encoder {name!r} {where}.",
        f"  expected one of: {', '.join(names)}",
    ]
    if source.hub:
        hub = ", ".join(f"{repo}/{fname}" for repo, fname in source.hub)
        lines.append(f"  or in the local Hugging Face cache: {hub}")
    if source.url:
        lines.append(f"  get it from: {source.url}")
    lines.extend(f"  {hint}" for hint in source.extra)
    lines.append("  pass --weights / --weights-dir, or --random-init for a random-weight test run")
    return "\n".join(lines)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """sha256 of a file read in chunks, so multi-GB checkpoints never sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()
