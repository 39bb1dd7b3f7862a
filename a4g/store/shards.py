"""Shard I/O of the store's big arrays behind one interface: ``open_rows(store, name)`` returns a
reader/writer with ``read(rows, cols=None)`` and ``write_shard(shard, data)``.

Two implementations, chosen by where the store lives:

- **local folders**: :class:`ShardedRows`, direct reads and writes of the Zarr v3 shard files
  (``pread`` at the offset the shard index gives + one zstd decode; a write is one zstd encode per
  inner chunk on a few threads, the index, and one atomic file replace);
- **s3:// and gs://**: :class:`TensorstoreRows`, tensorstore's ``zarr3`` driver on its kvstores.

Why not zarr-python: it moves every inner chunk through its async pipeline at roughly 1 ms of Python
each (a 16-frame clip: 0.3-0.5 s against 7-9 ms here), and on S3 it issues one GET per inner chunk
where tensorstore issues one per frame.

Why local folders keep the direct path although tensorstore reads them too. ``python
benchmarks/store.py`` (256 px DINOv2-B + SAM2.1 layout, 2 cores, three runs): writing a 128-frame
shard 108-223 ms direct vs 76-164 ms tensorstore, reading a 16-frame clip 7.1-8.9 vs 4.2-11.4 ms,
reading one encoder's channels 1.8-1.9 vs 1.6-2.0 ms; zarr-python 276-468, 324-478 and 35-48 ms.
tensorstore writes ~1.3x faster and reads on par: tens of ms per 128-frame shard, written by a
background thread while the GPU computes the next shard. What decides is that tensorstore is **not
fork-safe**: a process forked after its parent used tensorstore aborts on its first tensorstore
call (measured: SIGABRT, "fork() use detected"). PyTorch DataLoader workers are forked by default, after the training process has opened
and checked the store, and :class:`~a4g.train.data.ClipDataset` is meant for users' own DataLoaders;
with the direct path a local store works with any start method, and workers start no thread pools.
Remote stores have no ``pread``, so they take tensorstore, and the training loader starts their
workers by spawn (:func:`worker_start_method`); a forked child that tries anyway gets a clear
StoreError (``a4g.store.kvzarr.tensorstore_ready``) instead of SIGABRT.

Both backends write byte-identical shard files (tested), so a store written by one path reads
identically through the other and through zarr-python, and a local store can be copied to S3 as
is. :func:`open_rows` returns None for a local array whose layout is not the one :mod:`a4g.store`
creates; callers then read it with zarr.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import google_crc32c
import numpy as np
from numcodecs import Zstd

from a4g.errors import StoreError
from a4g.store.location import StoreLocation, parse_location

_EMPTY = np.iinfo(np.uint64).max  # index entry of a chunk that was never written
_BYTES_LE = {"name": "bytes", "configuration": {"endian": "little"}}
_DTYPES = {"float16": "<f2", "float32": "<f4", "int8": "|i1", "int64": "<i8", "uint64": "<u8"}
_HOST = socket.gethostname()
STALE_PARTIAL_S = 600.0
"""A temporary shard file of another host older than this has no live writer: a writer writes its
file in one call (well under a second per shard). Files of this host are judged by their pid."""
ENCODE_THREADS = min(8, os.cpu_count() or 1)
"""Threads that zstd-encode one shard's inner chunks (zstd runs outside the GIL, so they scale)."""
READ_CACHE_BYTES = 64 << 20
"""tensorstore's shard-index cache per reading process (8 KiB per 128-frame shard of targets)."""


class ShardReadError(StoreError):
    """A shard file is missing or damaged where a done shard should be."""


class ShardRows(Protocol):
    """What every backend offers for one array of a store (rows = the frames axis)."""

    shape: tuple[int, ...]

    def read(self, rows: np.ndarray, cols: tuple[int, int] | None = None) -> np.ndarray: ...

    def write_shard(self, shard: int, data: np.ndarray) -> None: ...


class _Layout:
    """Geometry of a sharded array, from its zarr.json (shared by both backends)."""

    def __init__(self, meta: dict) -> None:
        sharding = meta["codecs"][0]["configuration"]
        self.shape = tuple(meta["shape"])
        self.dtype = np.dtype(_DTYPES[meta["data_type"]])
        self.shard_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.inner = tuple(sharding["chunk_shape"])
        self.rows_per_shard = self.shard_shape[0]
        self.col_width = self.inner[-1]
        self.num_cols = self.shard_shape[-1] // self.col_width

    def shard_rows(self, shard: int, data: np.ndarray, name: str) -> tuple[int, np.ndarray]:
        """(first row, data as the array's dtype) after checking ``data`` fills shard ``shard``."""
        start = shard * self.rows_per_shard
        rows = min(self.rows_per_shard, self.shape[0] - start)
        data = np.ascontiguousarray(data, dtype=self.dtype)
        if rows <= 0 or data.shape != (rows, *self.shape[1:]):
            raise ValueError(f"shard {shard} of {name} needs shape {(rows, *self.shape[1:])}")
        return start, data


class ShardedRows(_Layout):
    """Direct reads and writes of one sharded array of a local store; reads whole rows or a range of
    last-axis inner chunks, writes whole shards.

    Holds no open files between calls (safe to pickle and to use after fork); shard indexes are
    cached, a few hundred bytes to kilobytes each.
    """

    def __init__(self, directory: Path, meta: dict, cache_shards: int = 256) -> None:
        super().__init__(meta)
        self.directory = directory
        zstd_cfg = meta["codecs"][0]["configuration"]["codecs"][1].get("configuration", {})
        self._zstd = Zstd(level=zstd_cfg.get("level", 0), checksum=zstd_cfg.get("checksum", False))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_shards = cache_shards

    def _shard_path(self, shard: int) -> Path:
        return self.directory / "c" / str(shard) / "/".join("0" * (len(self.shape) - 1))

    def _index(self, shard: int, fd: int) -> np.ndarray:
        """``[rows_per_shard, num_cols, 2]`` (offset, nbytes) of the shard's inner chunks, checked."""
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        n = self.rows_per_shard * self.num_cols * 16
        size = os.fstat(fd).st_size
        if size < n + 4:
            raise ShardReadError(f"{self._shard_path(shard)} is truncated ({size} bytes)")
        raw = os.pread(fd, n + 4, size - n - 4)
        if google_crc32c.value(raw[:n]) != int.from_bytes(raw[n:], "little"):
            raise ShardReadError(
                f"{self._shard_path(shard)}: shard index checksum mismatch; the store is damaged "
                "(run `a4g store verify` and re-extract the bad shards)"
            )
        index = np.frombuffer(raw[:n], "<u8").reshape(self.rows_per_shard, self.num_cols, 2)
        self._cache[shard] = index
        if len(self._cache) > self._cache_shards:
            self._cache.popitem(last=False)
        return index

    def read(self, rows: np.ndarray, cols: tuple[int, int] | None = None) -> np.ndarray:
        """Rows ``rows`` (any order) → array ``[len(rows), ...]``; ``cols`` = [first, stop) inner-chunk
        columns along the last axis (None: all)."""
        c0, c1 = cols or (0, self.num_cols)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:-1], (c1 - c0) * self.col_width), self.dtype)
        shards = rows // self.rows_per_shard
        for shard in np.unique(shards):
            path = self._shard_path(int(shard))
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise ShardReadError(f"{path} is missing; shard {shard} was never written") from None
            try:
                index = self._index(int(shard), fd)
                for i in np.flatnonzero(shards == shard):
                    local = int(rows[i]) - int(shard) * self.rows_per_shard
                    entries = index[local, c0:c1]
                    if (entries == _EMPTY).any():
                        raise ShardReadError(f"row {rows[i]} of {self.directory.name} was never written")
                    start, stop = int(entries[0, 0]), int(entries[-1].sum())
                    if stop - start == int(entries[:, 1].sum()):  # chunks back to back: one read
                        blob = os.pread(fd, stop - start, start)
                        pieces = [blob[o - start : o - start + n] for o, n in entries.tolist()]
                    else:
                        pieces = [os.pread(fd, n, o) for o, n in entries.tolist()]
                    for k, piece in enumerate(pieces):
                        out[i, ..., k * self.col_width : (k + 1) * self.col_width] = self._decode(piece, path)
            finally:
                os.close(fd)
        return out

    def _decode(self, piece: bytes, path: Path) -> np.ndarray:
        """One inner chunk. Chunks carry zstd's content checksum, so a damaged one fails here."""
        try:
            return np.frombuffer(self._zstd.decode(piece), self.dtype).reshape(self.inner[1:])
        except (RuntimeError, ValueError) as err:
            raise ShardReadError(
                f"{path}: a chunk does not decode ({err}); the store is damaged "
                "(run `a4g store verify` and re-extract the bad shards)"
            ) from None

    def write_shard(self, shard: int, data: np.ndarray) -> None:
        """Write all rows of shard `shard` (``data``: [rows in this shard, *shape[1:]]) as one file.

        The file appears atomically (temporary name, then ``os.replace``), so a reader or a killed
        writer never sees half a shard. The temporary name carries host and pid, so the leftovers
        of a killed writer are removed here and a live writer's file never is.
        """
        _, data = self.shard_rows(shard, data, self.directory.name)
        index = np.full((self.rows_per_shard, self.num_cols, 2), _EMPTY, dtype="<u8")
        w = self.col_width
        chunks = [
            data[r, ..., c * w : (c + 1) * w] for r in range(data.shape[0]) for c in range(self.num_cols)
        ]
        with ThreadPoolExecutor(ENCODE_THREADS) as pool:  # numcodecs' zstd releases the GIL
            parts = list(pool.map(lambda chunk: self._zstd.encode(np.ascontiguousarray(chunk)), chunks))
        sizes = np.array([len(p) for p in parts], dtype="<u8")
        entries = index[: data.shape[0]].reshape(-1, 2)
        entries[:, 0], entries[:, 1] = np.cumsum(sizes) - sizes, sizes  # chunks back to back, row-major
        raw_index = index.tobytes()
        parts += [raw_index, google_crc32c.value(raw_index).to_bytes(4, "little")]
        path = self._shard_path(shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_partials(path)
        tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.partial")
        with open(tmp, "wb") as f:
            f.writelines(parts)
        os.replace(tmp, path)
        self._cache.pop(shard, None)


def remove_dead_partials(path: Path) -> list[Path]:
    """Delete the temporary files ``.<name>.<host>.<pid>.partial`` of ``path`` whose writer is dead:
    a pid gone on this host, or (another host's) older than :data:`STALE_PARTIAL_S`. Returns them."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.partial"):
        owner = tmp.name[len(path.name) + 2 : -len(".partial")]
        host, _, pid = owner.rpartition(".")
        if _writer_alive(host or _HOST, pid, tmp):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _writer_alive(host: str, pid: str, tmp: Path) -> bool:
    if host != _HOST:
        try:
            return time.time() - tmp.stat().st_mtime < STALE_PARTIAL_S
        except FileNotFoundError:
            return False
    if not pid.isdigit() or int(pid) == os.getpid():  # ours: an attempt of this process that failed
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class TensorstoreRows(_Layout):
    """One sharded array of a store read and written through tensorstore's ``zarr3`` driver.

    Opens on first use, in the process that uses it (pickles without a handle). Reads refuse missing
    chunks instead of returning the NaN fill value, and reuse cached shard indexes without asking
    the server again: done shards never change under a reader. A clip costs one ranged GET per
    shard it touches (tensorstore merges the chunk reads of one shard).
    """

    def __init__(self, location: StoreLocation, meta: dict, *, cache_bytes: int = READ_CACHE_BYTES) -> None:
        super().__init__(meta)
        self.location = location
        self.cache_bytes = cache_bytes
        self._array = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    @property
    def array(self):
        if self._array is None:
            import tensorstore as ts

            from a4g.store.kvzarr import tensorstore_ready

            tensorstore_ready()
            spec = {
                "driver": "zarr3",
                "kvstore": self.location.kvstore_spec(),
                "fill_missing_data_reads": False,
                "recheck_cached_data": "open",
                "metadata_cache_pool": "cache_pool#index",
            }
            # Shard indexes cached, chunks not: random clips of a large store never hit a chunk twice,
            # and cached chunks would evict the indexes (measured on S3: 1 GET per shard a clip
            # touches this way, 2 with one shared pool once the store outgrows it).
            pools = {
                "cache_pool": {"total_bytes_limit": 0},
                "cache_pool#index": {"total_bytes_limit": self.cache_bytes},
            }
            context = ts.Context(pools)
            self._array = ts.open(spec, open=True, context=context).result()
        return self._array

    def read(self, rows: np.ndarray, cols: tuple[int, int] | None = None) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed); ``cols`` as :meth:`ShardedRows.read`."""
        rows = np.asarray(rows, dtype=np.int64)
        index = (
            (rows,)
            if cols is None
            else (rows, ..., slice(cols[0] * self.col_width, cols[1] * self.col_width))
        )
        try:
            return self.array[index].read().result()
        except ValueError as err:  # tensorstore reports missing and undecodable chunks as ValueError
            raise ShardReadError(
                f"{self.location}: {err}; the store is damaged or incomplete "
                "(run `a4g store verify` and re-extract the bad shards)"
            ) from None

    def write_shard(self, shard: int, data: np.ndarray) -> None:
        """Write all rows of shard ``shard`` as one object (one PUT: atomic on S3 and GCS)."""
        start, data = self.shard_rows(shard, data, str(self.location))
        self.array[start : start + data.shape[0]].write(data).result()


def open_rows(store: str | os.PathLike | StoreLocation, name: str) -> ShardRows | None:
    """The reader/writer of array ``name`` of the store at ``store`` (a path or URI): direct for local
    folders, tensorstore for object stores; None when a local array's layout is not the one
    :mod:`a4g.store` writes (then read it with zarr) or the array does not exist."""
    location = parse_location(store).child(name)
    if location.is_local:
        try:
            meta = json.loads((location.path / "zarr.json").read_text())
        except (OSError, ValueError):
            return None
        return ShardedRows(location.path, meta) if _known_layout(meta) else None
    import tensorstore as ts

    from a4g.store.kvzarr import tensorstore_ready

    tensorstore_ready()
    raw = ts.KvStore.open(location.kvstore_spec()).result().read("zarr.json").result()
    if raw.state != "value":
        return None
    meta = json.loads(raw.value)
    return TensorstoreRows(location, meta) if _sharded(meta) else None


def worker_start_method(store: str | os.PathLike | StoreLocation) -> str | None:
    """How loader workers of ``store`` must start: 'spawn' for stores read through tensorstore (see
    the module docstring), None (the platform default, fork on Linux) for local folders."""
    return None if parse_location(store).is_local else "spawn"


def _sharded(meta: dict) -> bool:
    try:
        return meta["codecs"][0]["name"] == "sharding_indexed" and meta["data_type"] in _DTYPES
    except (KeyError, IndexError, TypeError):
        return False


def _known_layout(meta: dict) -> bool:
    try:
        (codec,) = meta["codecs"]
        cfg = codec["configuration"]
        inner_codecs = cfg["codecs"]
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        inner = cfg["chunk_shape"]
        return (
            meta.get("zarr_format") == 3
            and meta["data_type"] in _DTYPES
            and meta["chunk_grid"]["name"] == "regular"
            and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
            and codec["name"] == "sharding_indexed"
            and cfg.get("index_location", "end") == "end"
            and cfg["index_codecs"] == [_BYTES_LE, {"name": "crc32c"}]
            and len(inner_codecs) == 2
            and (
                inner_codecs[0] == _BYTES_LE
                or inner_codecs[0] == {"name": "bytes"}
                and meta["data_type"] == "int8"
            )
            and inner_codecs[1]["name"] == "zstd"
            and inner[0] == 1
            and list(inner[1:-1]) == list(shard[1:-1])
            and shard[-1] % inner[-1] == 0
            and list(shard[1:]) == list(meta["shape"][1:])
        )
    except (KeyError, TypeError, ValueError):
        return False
