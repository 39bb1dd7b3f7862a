"""Create, open, write and check the sharded Zarr v3 feature store.

Layout of a store (a Zarr v3 group):

    zarr.json            root attributes: {"a4g_schema": <StoreSchema json + fingerprint>}
    latents[_flip]       [N, 2*C_lat, h, w]  VAE posterior parameters (mean ‖ logvar), one frame per chunk
    targets[_flip]       [N, tokens, C]      fused, per-encoder L2-normalized encoder targets
    index/offset,length,label   int64 per video; index attrs: ids, paths, classes, skipped
    done                 [num_shards] uint64; nonzero = shard complete, value = 2**32 + crc32 of its bytes

Shards hold `layout.shard_frames` frames of every array. The rule that keeps a store trustworthy:
**one writer owns a shard and writes it whole in one call**, then writes its done marker (each file
is written atomically: a temporary file and a rename locally, one PUT on object storage). A killed
writer leaves no marker, so the shard is simply redone on resume, and the redo removes what the
killed writer left of its temporary files. One process per rank writes (``a4g.store.lock``).

The schema is written last at creation, so a store without one is not a store yet. Creation never
deletes anything: an existing empty folder keeps its permissions (a symlink, a mount point, ``.``
stay what they are), and a location holding only what an interrupted creation wrote (the ~30 ms
window before the schema) is completed in place by the same command, anything else is refused.

A store lives at a local path or a URI (``file://``, ``s3://``, ``gs://``; ``a4g.store.location``).

The rest of the package: the schema (``schema.py``), the video index (``index.py``), direct shard-file
I/O (``shards.py``), store locations (``location.py``), writer locks (``lock.py``) and the checks behind ``a4g store verify`` (``verify.py``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import ZstdCodec
from zarr.core.buffer.core import default_buffer_prototype
from zarr.core.sync import sync

from a4g.errors import SchemaError, StoreError
from a4g.killpoints import kill_point
from a4g.store.index import VideoIndex, read_index, write_index
from a4g.store.location import StoreLocation, parse_location
from a4g.store.lock import LOCK_DIR, WriterLock, acquire_writer
from a4g.store.quant import SCALES
from a4g.store.schema import StoreSchema
from a4g.store.shards import ShardRows, open_rows
from a4g.store.verify import all_finite, done_marker, shard_tag, verify_store

SCHEMA_ATTR = "a4g_schema"


def _array_names(schema: StoreSchema) -> list[str]:
    names = ["latents", "targets", *([SCALES] if schema.layout.target_dtype == "int8" else [])]
    return names + [f"{n}_flip" for n in names] if schema.flip else names


def _array_dtype(schema: StoreSchema, name: str) -> str:
    """int8 targets keep their scales in float16 (a4g/store/quant.py); everything else is layout.dtype."""
    base = name.removesuffix("_flip")
    if base == "targets" and schema.layout.target_dtype == "int8":
        return "int8"
    return "float16" if base == SCALES else schema.layout.dtype


def _frame_shapes(schema: StoreSchema) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per-frame shape and inner-chunk shape of each array."""
    h, w = schema.latent_size
    lat = (2 * schema.vae.latent_channels, h, w)
    tgt = (schema.num_tokens, schema.target_channels)
    tgt_chunk = (schema.num_tokens, schema.layout.target_channel_chunk)
    scales = ((schema.num_tokens, len(schema.encoders)), (schema.num_tokens, 1))  # one column per encoder
    shapes = {"latents": (lat, lat), "targets": (tgt, tgt_chunk), SCALES: scales}
    return {name: shapes[name.removesuffix("_flip")] for name in _array_names(schema)}


class FeatureStore:
    """A feature store on disk. Use `create`, `open` or `open_or_create`, not the constructor."""

    def __init__(self, group: zarr.Group, schema: StoreSchema, path: str | StoreLocation, writable: bool):
        self.group = group
        self.schema = schema
        self.location = parse_location(path)
        self.path = str(path) if self.location.is_local else self.location.uri
        """As given for a local store (may be relative), the URI for an object store."""
        self.writable = writable
        self.lock: WriterLock | None = None
        self.index = read_index(group)
        self._arrays: dict[str, zarr.Array] = {}
        self._direct_rows: dict[str, ShardRows | None] = {}

    @property
    def uri(self) -> str:
        """Where the store is, for records: an absolute local path, or the s3:// / gs:// URI."""
        return self.location.uri

    def close(self) -> None:
        """Release the writer lock, if this process holds one (see :meth:`open_or_create`)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- construction ----------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, schema: StoreSchema, index: VideoIndex) -> FeatureStore:
        """Make an empty store for `index` at `path` (a folder or URI) without deleting anything there.

        Refuses a location that holds anything but an unfinished creation (see the module doc).
        """
        location = parse_location(path)
        if _contents(location) not in ("empty", "unfinished"):
            raise StoreError(f"{location} exists and is not empty; choose a new --out or remove it")
        if index.ids != schema.dataset.videos:
            raise StoreError("video index order differs from schema.dataset.videos")
        _remove_partials(location, "")  # what a kill during the root's first write left
        group = zarr.open_group(store=_zarr_store(location), mode="a")
        n = index.num_frames
        shard = schema.layout.shard_frames
        compressor = ZstdCodec(level=schema.layout.codec_level, checksum=True)
        for name, (frame_shape, chunk_shape) in _frame_shapes(schema).items():
            group.create_array(
                name,
                shape=(n, *frame_shape),
                chunks=(1, *chunk_shape),
                shards=(shard, *frame_shape),
                dtype=_array_dtype(schema, name),
                compressors=compressor,
                fill_value=0 if _array_dtype(schema, name) == "int8" else np.nan,
                dimension_names=(
                    "frame",
                    *(("channel", "y", "x") if len(frame_shape) == 3 else ("token", "channel")),
                ),
                overwrite=True,  # only ever an array of an unfinished creation (checked above)
            )
        group.create_array(
            "done",
            shape=(max(1, math.ceil(n / shard)),),
            chunks=(1,),
            dtype="uint64",
            fill_value=0,
            overwrite=True,
        )
        write_index(group, index)
        kill_point("store:create-arrays")
        group.attrs[SCHEMA_ATTR] = schema.to_json_dict()  # last: its presence means "created"
        return cls(group, schema, path, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, *, writable: bool = False) -> FeatureStore:
        """Open an existing store (a folder or URI); a clear StoreError if `path` is not one."""
        location = parse_location(path)
        state = _contents(location)
        if state == "empty":
            raise StoreError(
                f"no store at {location}: the path does not exist or is empty (create one with `a4g extract`)"
            )
        if state == "unfinished":
            raise StoreError(
                f"{location}: the creation of this store was interrupted; rerun the `a4g extract` command "
                "that started it to finish it"
            )
        try:
            group = zarr.open_group(
                store=_zarr_store(location, read_only=not writable), mode="r+" if writable else "r"
            )
        except Exception as err:  # zarr raises several types for "no group here"
            raise StoreError(f"{location} is not an a4g feature store (no Zarr v3 group: {err})") from None
        data = group.attrs.get(SCHEMA_ATTR)
        if data is None:
            raise StoreError(f"{location} is a Zarr group but has no a4g schema: not an a4g store")
        try:
            schema = StoreSchema.from_json_dict(data)
        except SchemaError as err:
            raise StoreError(f"{location}: {err}") from None
        store = cls(group, schema, path, writable=writable)
        store._check_arrays()
        return store

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike,
        schema: StoreSchema,
        index: VideoIndex,
        *,
        writer_rank: int | None = None,
    ) -> FeatureStore:
        """Resume a store made with the same schema, or create it; refuses any difference by field.

        With `writer_rank`, first takes that rank's writer lock (held until :meth:`close`), so a
        second writer of the rank is refused before it looks at, creates or writes anything.
        """
        location = parse_location(path)
        _contents(location)  # a file or an unreadable place: its own error before any lock file
        lock = acquire_writer(location, writer_rank) if writer_rank is not None else None
        try:
            if _contents(location) == "store":
                store = cls.open(path, writable=True)
                diffs = schema_differences(store.schema, schema)
                if diffs:
                    raise StoreError(
                        f"{location} holds a store made with a different configuration; refusing to mix them:\n  "
                        + "\n  ".join(diffs)
                        + "\nuse a new --out, or repeat the original command to resume"
                    )
            else:
                store = cls.create(path, schema, index)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        store.lock = lock
        return store

    @classmethod
    def wait_for(
        cls,
        path: str | os.PathLike,
        timeout: float = 600.0,
        poll: float = 0.5,
        *,
        writer_rank: int | None = None,
    ) -> FeatureStore:
        """Open a store that another process is creating (extraction ranks > 0 use this); with
        `writer_rank`, holding that rank's writer lock as :meth:`open_or_create` does."""
        lock = acquire_writer(path, writer_rank) if writer_rank is not None else None
        deadline = time.monotonic() + timeout
        while True:
            try:
                store = cls.open(path, writable=True)
            except StoreError:
                if time.monotonic() > deadline:
                    if lock is not None:
                        lock.release()
                    raise
                time.sleep(poll)
                continue
            store.lock = lock
            return store

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
        if self.lock is not None:
            self.lock.check()
        start, stop = self.shard_range(shard)
        expected = set(self.array_names)
        if set(arrays) != expected:
            raise ValueError(f"write_shard needs arrays {sorted(expected)}, got {sorted(arrays)}")
        prepared = {}
        for name in self.array_names:
            arr = self.array(name)
            dtype = np.dtype(_array_dtype(self.schema, name))
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
        kill_point(f"store:before-done:{shard}")
        _remove_partials(self.location, f"done/c/{shard}")  # a killed writer's half-written marker
        self.group["done"][shard] = done_marker(prepared.values(), shard_tag(self, shard))

    def read_shard(self, shard: int) -> dict[str, np.ndarray]:
        start, stop = self.shard_range(shard)
        out = {}
        for name in self.array_names:
            fast = self._direct(name)
            out[name] = (
                fast.read(np.arange(start, stop)) if fast is not None else self.array(name)[start:stop]
            )
        return out

    def _direct(self, name: str) -> ShardRows | None:
        """The shard backend of an array (a4g.store.shards): direct files locally, tensorstore remotely."""
        if name not in self._direct_rows:
            self._direct_rows[name] = open_rows(self.location, name)
        return self._direct_rows[name]

    # ---- reporting -------------------------------------------------------------------------------

    def bytes_on_disk(self) -> int | None:
        """Bytes of a local store's files; None for an object store (listing sizes costs a request each)."""
        root = self.location.path
        if root is None or not root.is_dir():
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


_OWN_NAMES = {"zarr.json", LOCK_DIR, "index", "done"} | {
    f"{n}{s}" for n in ("latents", "targets", SCALES) for s in ("", "_flip")
}
"""Everything a creation writes at the top of a store (any schema)."""


def _zarr_store(location: StoreLocation, read_only: bool = False) -> zarr.abc.store.Store:
    """zarr-python's view of a location: its LocalStore, or tensorstore's kvstore (a4g.store.kvzarr)."""
    if location.is_local:
        return zarr.storage.LocalStore(location.path, read_only=read_only)
    from a4g.store.kvzarr import KvZarrStore

    return KvZarrStore(location.kvstore_spec(), read_only=read_only)


def _contents(location: StoreLocation) -> str:
    """What is at `location`: 'empty' (nothing, or only writer locks), 'store' (a root with the schema),
    'unfinished' (only what an interrupted creation writes, no schema yet) or 'other'.

    The root is read first, so a store is recognized without listing its (possibly 100 000) objects.
    Raises StoreError for a local file or a place that cannot be read.
    """
    if location.is_local and not location.path.exists():
        if location.path.is_symlink():
            raise StoreError(f"{location} is a symlink to {os.readlink(location.path)}, which does not exist")
        return "empty"
    if location.is_local and not location.path.is_dir():
        raise StoreError(
            f"{location} is a file, not a folder; give a folder path (created when missing) or a URI"
        )
    try:
        raw = sync(_zarr_store(location, read_only=True).get("zarr.json", default_buffer_prototype()))
        try:
            root = None if raw is None else json.loads(raw.to_bytes())
            attrs = (
                root.get("attributes", {}) if root is not None and root.get("node_type") == "group" else None
            )
        except (ValueError, AttributeError):
            return "other"
        if attrs is not None and SCHEMA_ATTR in attrs:
            return "store"
        names = _top_names(location)
    except (OSError, ValueError) as err:  # tensorstore reports network and permission errors as ValueError
        detail = str(err).split(" [", 1)[0]  # tensorstore appends the server's whole XML reply
        raise StoreError(f"{location}: cannot read it ({detail})") from None
    if not names - {LOCK_DIR}:
        return "empty"
    ours = all(n in _OWN_NAMES or n.endswith(".partial") for n in names)
    return "unfinished" if ours and (root is None or attrs == {}) else "other"


def _top_names(location: StoreLocation) -> set[str]:
    """Names directly inside a location (files and folders; first key parts of an object store)."""
    if not location.is_local:

        async def names() -> set[str]:
            return {n async for n in _zarr_store(location, read_only=True).list_dir("")}

        return sync(names())
    path = location.path
    if path.exists() and not path.is_dir():
        raise StoreError(
            f"{location} is a file, not a folder; give a folder path (created when missing) or a URI"
        )
    return {child.name for child in path.iterdir()} if path.is_dir() else set()


def _remove_partials(location: StoreLocation, key: str) -> None:
    """Remove the temporary files zarr's local store left for `key` when its writer was killed
    (``<key>.<uuid>.partial``; a key of '' means the root's ``zarr.json``). Called only by the one
    process that may write `key` (the creator, or the writer holding the shard's rank lock), so no
    live writer's file is removed."""
    if not location.is_local:
        return  # object stores have no temporary objects: a PUT is atomic
    target = location.path / (key or "zarr.json")
    for tmp in target.parent.glob(f"{target.stem}.*.partial"):
        tmp.unlink(missing_ok=True)


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
