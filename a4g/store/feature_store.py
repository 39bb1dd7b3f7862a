"""Create, open, write and check the sharded Zarr v3 feature store.

Layout of a store (a Zarr v3 group):

    zarr.json            root attributes: {"a4g_schema": <StoreSchema json + fingerprint>}
    latents[_flip]       [N, 2*C_lat, h, w]  VAE posterior parameters (mean ‖ logvar), one frame per chunk
    targets[_flip]       [N, tokens, C]      fused, per-encoder L2-normalized encoder targets
    index/offset,length,label   int64 per video; index attrs: ids, paths, classes, skipped
    done                 [num_shards] uint64; nonzero = shard complete, value = 2**32 + crc32 of its bytes

Shards hold `layout.shard_frames` frames of every array. The rule that keeps a store trustworthy:
**one writer owns a shard and writes it whole in one call**, then writes its done marker (each file
is written atomically by Zarr's local store). A killed writer leaves no marker, so the shard is simply
redone on resume. The schema is written last at creation, so a store without one is not a store yet.

The rest of the package: the schema (``schema.py``), the video index (``index.py``), direct shard-file
I/O (``shards.py``) and the checks behind ``a4g store verify`` (``verify.py``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync

from a4g.errors import SchemaError, StoreError
from a4g.store.index import VideoIndex, read_index, write_index
from a4g.store.schema import StoreSchema
from a4g.store.shards import ShardedRows, open_rows
from a4g.store.verify import all_finite, done_marker, verify_store

SCHEMA_ATTR = "a4g_schema"


def _array_names(schema: StoreSchema) -> list[str]:
    names = ["latents", "targets"]
    return names + [f"{n}_flip" for n in names] if schema.flip else names


def _frame_shapes(schema: StoreSchema) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per-frame shape and inner-chunk shape of each array."""
    h, w = schema.latent_size
    lat = (2 * schema.vae.latent_channels, h, w)
    tgt = (schema.num_tokens, schema.target_channels)
    tgt_chunk = (schema.num_tokens, schema.layout.target_channel_chunk)
    shapes = {"latents": (lat, lat), "targets": (tgt, tgt_chunk)}
    return {name: shapes[name.removesuffix("_flip")] for name in _array_names(schema)}


class FeatureStore:
    """A feature store on disk. Use `create`, `open` or `open_or_create`, not the constructor."""

    def __init__(self, group: zarr.Group, schema: StoreSchema, path: str, writable: bool):
        self.group = group
        self.schema = schema
        self.path = path
        self.writable = writable
        self.index = read_index(group)
        self._arrays: dict[str, zarr.Array] = {}
        self._direct_rows: dict[str, ShardedRows | None] = {}

    # ---- construction ----------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, schema: StoreSchema, index: VideoIndex) -> FeatureStore:
        """Make an empty store for `index`; refuses to overwrite anything at `path`."""
        path = str(path)
        if Path(path).exists() and any(Path(path).iterdir()):
            raise StoreError(f"{path} exists and is not empty; choose a new --out or remove it")
        if index.ids != schema.dataset.videos:
            raise StoreError("video index order differs from schema.dataset.videos")
        group = zarr.open_group(path, mode="w")
        n = index.num_frames
        shard = schema.layout.shard_frames
        compressor = ZstdCodec(level=schema.layout.codec_level, checksum=True)
        for name, (frame_shape, chunk_shape) in _frame_shapes(schema).items():
            group.create_array(
                name,
                shape=(n, *frame_shape),
                chunks=(1, *chunk_shape),
                shards=(shard, *frame_shape),
                dtype=schema.layout.dtype,
                compressors=compressor,
                fill_value=np.nan,
                dimension_names=(
                    "frame",
                    *(("channel", "y", "x") if len(frame_shape) == 3 else ("token", "channel")),
                ),
            )
        group.create_array(
            "done", shape=(max(1, math.ceil(n / shard)),), chunks=(1,), dtype="uint64", fill_value=0
        )
        write_index(group, index)
        group.attrs[SCHEMA_ATTR] = schema.to_json_dict()  # last: its presence means "created"
        return cls(group, schema, path, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, *, writable: bool = False) -> FeatureStore:
        """Open an existing store; a clear StoreError if `path` is not one."""
        path = str(path)
        if not Path(path).exists():
            raise StoreError(f"no store at {path}: the path does not exist (create one with `a4g extract`)")
        try:
            group = zarr.open_group(path, mode="r+" if writable else "r")
        except Exception as err:  # zarr raises several types for "no group here"
            raise StoreError(f"{path} is not an a4g feature store (no Zarr v3 group: {err})") from None
        data = group.attrs.get(SCHEMA_ATTR)
        if data is None:
            raise StoreError(
                f"{path} is a Zarr group but has no a4g schema: not an a4g store, or its creation was "
                "interrupted (remove it and run `a4g extract` again)"
            )
        try:
            schema = StoreSchema.from_json_dict(data)
        except SchemaError as err:
            raise StoreError(f"{path}: {err}") from None
        store = cls(group, schema, path, writable=writable)
        store._check_arrays()
        return store

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, schema: StoreSchema, index: VideoIndex) -> FeatureStore:
        """Resume a store made with the same schema, or create it; refuses any difference by field."""
        if Path(path).exists() and any(Path(path).iterdir()):
            store = cls.open(path, writable=True)
            diffs = schema_differences(store.schema, schema)
            if diffs:
                raise StoreError(
                    f"{path} holds a store made with a different configuration; refusing to mix them:\n  "
                    + "\n  ".join(diffs)
                    + "\nuse a new --out, or repeat the original command to resume"
                )
            return store
        return cls.create(path, schema, index)

    @classmethod
    def wait_for(cls, path: str | os.PathLike, timeout: float = 600.0, poll: float = 0.5) -> FeatureStore:
        """Open a store that another process is creating (extraction ranks > 0 use this)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return cls.open(path, writable=True)
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(poll)

    # ---- arrays and shards -----------------------------------------------------------------------

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            if name not in _array_names(self.schema):
                hint = " (extract with --hflip to store flip twins)" if name.endswith("_flip") else ""
                raise StoreError(f"{self.path} has no array {name!r}{hint}")
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    @property
    def array_names(self) -> list[str]:
        return _array_names(self.schema)

    @property
    def num_frames(self) -> int:
        return self.index.num_frames

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_frames / self.schema.layout.shard_frames)

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Frames [start, stop) that shard `shard` holds."""
        if not 0 <= shard < self.num_shards:
            raise IndexError(f"shard {shard} out of range 0..{self.num_shards - 1}")
        size = self.schema.layout.shard_frames
        return shard * size, min((shard + 1) * size, self.num_frames)

    def done_mask(self) -> np.ndarray:
        """Boolean per shard: True where the shard's done marker exists."""
        return self.group["done"][: self.num_shards] != 0

    def done_shards(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.done_mask())]

    @property
    def complete(self) -> bool:
        return bool(self.done_mask().all())

    def write_shard(self, shard: int, arrays: dict[str, np.ndarray]) -> None:
        """Write every array of one shard in one call each, then mark the shard done.

        `arrays` maps each of `array_names` to data shaped [frames in shard, ...]. Values must be
        finite: a NaN here would poison every run that reads the store, so it is refused.
        """
        if not self.writable:
            raise StoreError(f"{self.path} is open read-only")
        start, stop = self.shard_range(shard)
        expected = set(self.array_names)
        if set(arrays) != expected:
            raise ValueError(f"write_shard needs arrays {sorted(expected)}, got {sorted(arrays)}")
        dtype = np.dtype(self.schema.layout.dtype)
        prepared = {}
        for name in self.array_names:
            arr = self.array(name)
            data = np.ascontiguousarray(np.asarray(arrays[name]).astype(dtype, copy=False))
            want = (stop - start, *arr.shape[1:])
            if data.shape != want:
                raise ValueError(f"shard {shard} {name}: shape {data.shape}, expected {want}")
            if not all_finite(data):
                raise ValueError(f"shard {shard} {name}: non-finite values; refusing to store them")
            prepared[name] = data
        for name, data in prepared.items():
            direct = self._direct(name)
            if direct is not None:
                direct.write_shard(shard, data)
            else:
                arr = self.array(name)
                _delete_shard_file(arr, shard)
                arr[start:stop] = data
        self.group["done"][shard] = done_marker(prepared.values())

    def read_shard(self, shard: int) -> dict[str, np.ndarray]:
        start, stop = self.shard_range(shard)
        return {name: self.array(name)[start:stop] for name in self.array_names}

    def _direct(self, name: str) -> ShardedRows | None:
        """Direct shard-file access for arrays in the layout this module creates (see a4g.store.shards)."""
        if name not in self._direct_rows:
            self._direct_rows[name] = open_rows(self.path, name)
        return self._direct_rows[name]

    # ---- reporting -------------------------------------------------------------------------------

    def bytes_on_disk(self) -> int | None:
        root = Path(self.path)
        if not root.is_dir():
            return None
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    def info(self) -> dict[str, Any]:
        """Summary used by `a4g store info`."""
        s = self.schema
        done = self.done_mask()
        return {
            "path": self.path,
            "fingerprint": s.fingerprint,
            "format_version": s.format_version,
            "dataset": {
                "name": s.dataset.name,
                "root": s.dataset.root,
                "split": s.dataset.split,
                "fold": s.dataset.fold,
            },
            "videos": len(self.index),
            "frames": self.num_frames,
            "shards_done": int(done.sum()),
            "shards_total": self.num_shards,
            "complete": bool(done.all()),
            "bytes_on_disk": self.bytes_on_disk(),
            "bytes_per_frame_uncompressed": s.bytes_per_frame(),
            "encoders": [
                {
                    "name": e.name,
                    "channels": e.channels,
                    "slice": list(s.fusion.slices[e.name]),
                    "weights": e.weights_sha256,
                    "input_size": e.input_size,
                    "output": e.output,
                }
                for e in s.encoders
            ],
            "vae": {
                "name": s.vae.name,
                "weights": s.vae.weights_sha256,
                "latent_channels": s.vae.latent_channels,
            },
            "token_grid": list(s.token_grid),
            "frame_size": s.preprocess.size,
            "every": s.preprocess.every,
            "flip": s.flip,
            "random_init": s.random_init,
            "skipped": [{"path": k.path, "reason": k.reason} for k in self.index.skipped],
            "schema": s.to_json_dict(),
        }

    def verify(self, check_values: bool = True) -> list[str]:
        """Problems found by :func:`a4g.store.verify.verify_store` (empty = complete and sound)."""
        return verify_store(self, check_values)

    @property
    def stored_fingerprint(self) -> str | None:
        """The fingerprint written next to the schema (verify checks that it recomputes)."""
        return self.group.attrs[SCHEMA_ATTR].get("fingerprint")

    def frame_shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """Per-frame shape and inner-chunk shape of each array the schema asks for."""
        return _frame_shapes(self.schema)

    def _check_arrays(self) -> None:
        missing = [n for n in [*self.array_names, "done"] if n not in self.group]
        if missing:
            raise StoreError(f"{self.path} lacks arrays {missing}; the store is damaged")


def _delete_shard_file(arr: zarr.Array, shard: int) -> None:
    """Remove what an earlier, interrupted writer may have left of this shard.

    Zarr reads an existing shard file even when a write covers the whole shard; a damaged leftover
    would make the retry fail instead of replacing it.
    """
    key = arr.metadata.encode_chunk_key((shard,) + (0,) * (arr.ndim - 1))
    sync((arr.store_path / key).delete())


def schema_differences(a: StoreSchema, b: StoreSchema) -> list[str]:
    """Human-readable field-by-field differences of the content of two schemas."""
    out: list[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), f"{prefix}.{key}" if prefix else key)
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and prefix != "dataset.videos":
            for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
                walk(xi, yi, f"{prefix}[{i}]")
        elif x != y:
            if prefix == "dataset.videos":
                out.append(f"dataset.videos: store has {len(x)} videos, this run {len(y)} (or different ids)")
            else:
                out.append(f"{prefix}: store has {x!r}, this run {y!r}")

    walk(a.content_dict(), b.content_dict(), "")
    return out


def read_rows(array: zarr.Array, rows: Sequence[int] | np.ndarray) -> np.ndarray:
    """Read rows `rows` of a store array (sorted, possibly strided) with one orthogonal selection."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and np.all(np.diff(rows) == 1):
        return array[int(rows[0]) : int(rows[-1]) + 1]
    return array.get_orthogonal_selection((rows,))


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB' (for summaries and estimates)."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
