"""Direct reads and writes of the store's Zarr v3 shard files (the layout `a4g.store` creates).

Why: zarr-python moves every inner chunk through its async pipeline at roughly 1 ms of Python each.
A 16-frame clip of fused targets is 16 × (channel chunks) inner chunks, so a loader worker reading
through zarr delivers only ~250 frames/s; and a 128-frame shard of 1024-channel targets is 512
inner chunks, so writing it through zarr spends ~0.4 s holding the GIL that the extraction loop
needs to feed the GPU. The store's layout is simple — one frame per inner chunk, ``bytes`` +
``zstd`` inner codecs, the shard index with ``crc32c`` at the end of each shard file — so a read is
a ``pread`` at the offset the index gives plus one zstd decode, and a write is one zstd encode per
chunk, the index, and one atomic file replace. :func:`open_rows` checks the array's metadata against
exactly that layout and returns None otherwise, so callers fall back to zarr for anything else.
Files written here are ordinary Zarr shards: zarr reads them (tested).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import google_crc32c
import numpy as np
from numcodecs import Zstd

from a4g.errors import StoreError

_EMPTY = np.iinfo(np.uint64).max  # index entry of a chunk that was never written
_BYTES_LE = {"name": "bytes", "configuration": {"endian": "little"}}
_DTYPES = {"float16": "<f2", "float32": "<f4", "int64": "<i8", "uint64": "<u8"}


class ShardReadError(StoreError):
    """A shard file is missing or damaged where a done shard should be."""


class ShardedRows:
    """Reads and writes rows (axis 0) of one sharded array; reads whole rows or a range of last-axis
    inner chunks, writes whole shards.

    Holds no open files between calls (safe to pickle and to use after fork); shard indexes are
    cached, a few hundred bytes to kilobytes each.
    """

    def __init__(self, directory: Path, meta: dict, cache_shards: int = 256) -> None:
        sharding = meta["codecs"][0]["configuration"]
        self.directory = directory
        self.shape = tuple(meta["shape"])
        self.dtype = np.dtype(_DTYPES[meta["data_type"]])
        self.shard_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.inner = tuple(sharding["chunk_shape"])
        self.rows_per_shard = self.shard_shape[0]
        self.col_width = self.inner[-1]
        self.num_cols = self.shard_shape[-1] // self.col_width
        zstd_cfg = sharding["codecs"][1].get("configuration", {})
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
        writer never sees half a shard.
        """
        start = shard * self.rows_per_shard
        rows = min(self.rows_per_shard, self.shape[0] - start)
        data = np.ascontiguousarray(data, dtype=self.dtype)
        if rows <= 0 or data.shape != (rows, *self.shape[1:]):
            raise ValueError(f"shard {shard} of {self.directory.name} needs shape {(rows, *self.shape[1:])}")
        index = np.full((self.rows_per_shard, self.num_cols, 2), _EMPTY, dtype="<u8")
        parts, offset = [], 0
        for r in range(rows):
            for c in range(self.num_cols):
                blob = self._zstd.encode(
                    np.ascontiguousarray(data[r, ..., c * self.col_width : (c + 1) * self.col_width])
                )
                index[r, c] = (offset, len(blob))
                parts.append(blob)
                offset += len(blob)
        raw_index = index.tobytes()
        parts += [raw_index, google_crc32c.value(raw_index).to_bytes(4, "little")]
        path = self._shard_path(shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.partial"):  # left by a killed writer of this shard
            stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        with open(tmp, "wb") as f:
            f.writelines(parts)
        os.replace(tmp, path)
        self._cache.pop(shard, None)


def open_rows(store_path: str | os.PathLike, name: str) -> ShardedRows | None:
    """A fast reader for array ``name`` of a local store, or None when its layout is not the one
    :mod:`a4g.store` writes (then read it with zarr)."""
    directory = Path(store_path) / name
    try:
        meta = json.loads((directory / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return ShardedRows(directory, meta) if _known_layout(meta) else None


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
            and inner_codecs[0] == _BYTES_LE
            and inner_codecs[1]["name"] == "zstd"
            and inner[0] == 1
            and list(inner[1:-1]) == list(shard[1:-1])
            and shard[-1] % inner[-1] == 0
            and list(shard[1:]) == list(meta["shape"][1:])
        )
    except (KeyError, TypeError, ValueError):
        return False
