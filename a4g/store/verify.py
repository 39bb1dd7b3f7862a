"""What makes a store trustworthy: finite values, a checksum per shard, a cheap check and a full one.

A shard's done marker is one uint64, 0 while the shard is not done. When it is done:

- low 32 bits: crc32 of its values (all arrays, in ``array_names`` order), which only a full re-read
  checks (``a4g store verify``);
- high 32 bits: a tag of its files (2 .. 2**32-1): crc32 over each array's file tail, i.e. the Zarr
  v3 shard index with its crc32c plus the 64 bytes of compressed data before it (which end with
  zstd's checksum of the last chunk's content, so files with equal indexes still differ). Reading
  those few kilobytes per file checks, cheaply, that every file is there, that its index is intact
  (its crc32c recomputes), and that it is the file the marker was written for: two swapped shard
  files, or a shard file replaced behind the store's back, fail it. Stores written before the tag
  have high bits 1 (``LEGACY_TAG``): their indexes are checked, the match is not.

The quick check (``--quick``, the end of every extraction, the start of every training run) reads
only the file tails: measured 2.0 s for 2000 shards x 4 arrays on the shared 2-core machine (local
``pread``; about half of it reading the done markers, one file per shard). A flipped byte inside
compressed data needs the full check, which decodes every chunk (zstd content checksums) and
recomputes the values' crc32. ``--repair`` marks the damaged shards not done, so the same
``a4g extract`` command recomputes exactly those (and nothing else).
"""

from __future__ import annotations

import asyncio
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import google_crc32c
import numpy as np

from a4g.errors import StoreError

if TYPE_CHECKING:
    from a4g.store.feature_store import FeatureStore

LEGACY_TAG = 1
_LOW = (1 << 32) - 1
_INDEX_ENTRY = 16  # (offset, nbytes) uint64 pair per inner chunk
_CRC32C = 4
_DATA_TAIL = 64
"""Bytes of compressed data read with each shard index: the end of the file's last chunk, which ends
with zstd's checksum of that chunk's content, so the tag tells apart files whose indexes are equal
(chunks that compress to the same sizes, e.g. incompressible ones)."""
_IO_BATCH = 256  # shard-index reads in flight at once (local files or object storage)


def all_finite(data: np.ndarray) -> bool:
    """No NaN or Inf. For float16 an exponent-bit test: numpy's isfinite on float16 is ~10x slower."""
    if data.dtype == np.float16:
        return not np.any((data.view(np.uint16) & 0x7C00) == 0x7C00)
    return bool(np.isfinite(data).all())


def done_marker(arrays: Iterable[np.ndarray], tag: int = LEGACY_TAG) -> int:
    """The done marker of a shard holding `arrays` (C-contiguous, in the store's array order)."""
    crc = 0
    for data in arrays:
        crc = zlib.crc32(np.ascontiguousarray(data), crc)
    return (tag << 32) | crc


def _tag_of(tails: Sequence[bytes]) -> int:
    """The file tag from each array's file tail (last data bytes, index, crc32c), in array order; never
    0 (not done) or LEGACY_TAG."""
    crc = 0
    for tail in tails:
        crc = zlib.crc32(tail, crc)
    return crc % ((1 << 32) - 2) + 2


# ---- reading shard indexes -----------------------------------------------------------------------


def _index_nbytes(arr) -> int | None:
    """Bytes of the shard index (with its crc32c) at the end of each shard file; None for other layouts."""
    try:
        (codec,) = arr.metadata.codecs
        cfg = codec.to_dict()["configuration"]
    except (AttributeError, ValueError, KeyError, TypeError):
        return None
    names = [c["name"] for c in cfg.get("index_codecs", [])]
    if cfg.get("index_location", "end") != "end" or names != ["bytes", "crc32c"]:
        return None
    chunks = math.prod(s // c for s, c in zip(arr.shards, cfg["chunk_shape"], strict=True))
    return chunks * _INDEX_ENTRY + _CRC32C


def _key(arr, shard: int) -> str:
    """The key of shard `shard`'s file inside its array (shards span every axis but the frames)."""
    return arr.metadata.encode_chunk_key((shard,) + (0,) * (arr.ndim - 1))


async def _tail(arr, shard: int, nbytes: int) -> bytes | None:
    from zarr.abc.store import SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype

    buf = await (arr.store_path / _key(arr, shard)).get(
        default_buffer_prototype(), byte_range=SuffixByteRequest(nbytes)
    )
    return None if buf is None else buf.to_bytes()


def _local_tail(path: Path, nbytes: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, min(nbytes, size), max(0, size - nbytes))
    finally:
        os.close(fd)


def _read_tails(store: FeatureStore, shards: Sequence[int]) -> dict[tuple[str, int], bytes | None]:
    """Each array's file tail (see _DATA_TAIL) for `shards`: ``pread`` for a local store (~20x faster
    than zarr's async get per small read here), else concurrent reads through the store's Zarr I/O."""
    from zarr.core.sync import sync

    jobs = []
    for name in store.array_names:
        arr = store.array(name)
        nbytes = _index_nbytes(arr)
        if nbytes is not None:
            jobs += [(name, shard, arr, nbytes + _DATA_TAIL) for shard in shards]
    local = getattr(getattr(store, "location", None), "path", None)
    if local is not None:
        return {(n, s): _local_tail(local / n / _key(arr, s), k) for n, s, arr, k in jobs}
    out: dict[tuple[str, int], bytes | None] = {}
    for i in range(0, len(jobs), _IO_BATCH):
        batch = jobs[i : i + _IO_BATCH]

        async def gather(batch=batch):
            return await asyncio.gather(*(_tail(arr, s, n) for _, s, arr, n in batch))

        for (name, shard, _, _), raw in zip(batch, sync(gather()), strict=True):
            out[name, shard] = raw
    return out


def shard_tag(store: FeatureStore, shard: int) -> int:
    """The file tag of a shard just written (its done marker's high bits); LEGACY_TAG if unreadable."""
    tails = _read_tails(store, [shard])
    names = [n for n in store.array_names if (n, shard) in tails]
    raws = [tails[n, shard] for n in names]
    if not names or any(r is None for r in raws):
        return LEGACY_TAG
    return _tag_of(raws)


# ---- checks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardDamage:
    """One finding about one done shard."""

    shard: int
    frames: tuple[int, int]
    kind: str
    """'missing' (a file), 'index' (checksum or truncation), 'mismatch' (not the file its marker
    recorded), 'data' (does not decode or has other values than written), 'nonfinite'."""
    detail: str

    def __str__(self) -> str:
        return f"shard {self.shard} (frames {self.frames[0]}..{self.frames[1] - 1}): {self.detail}"


@dataclass
class VerifyReport:
    """What :func:`inspect_store` found. ``ok``: complete and sound."""

    store_problems: list[str] = field(default_factory=list)
    not_done: list[int] = field(default_factory=list)
    damage: list[ShardDamage] = field(default_factory=list)

    @property
    def damaged(self) -> list[int]:
        """Done shards with any finding, sorted."""
        return sorted({d.shard for d in self.damage})

    @property
    def ok(self) -> bool:
        return not (self.store_problems or self.not_done or self.damage)

    def lines(self, store: FeatureStore) -> list[str]:
        """Every finding as one line (shards not done first, then damage in shard order)."""
        out = list(self.store_problems)
        out += [f"shard {s} (frames {store.shard_range(s)}) is not done" for s in self.not_done]
        return out + [str(d) for d in sorted(self.damage, key=lambda d: d.shard)]


def quick_damage(store: FeatureStore, shards: Sequence[int] | None = None) -> list[ShardDamage]:
    """Index checks of done shards (all, or those of `shards` that are done): files present, shard-index
    crc32c intact, files the ones the done marker recorded. Reads only the indexes."""
    markers = store.group["done"][: store.num_shards]
    todo = [s for s in (range(store.num_shards) if shards is None else shards) if markers[s]]
    tails = _read_tails(store, todo)
    sizes = {name: _index_nbytes(store.array(name)) for name in store.array_names}
    damage = []
    for shard in todo:
        found, sound = _index_findings(store, shard, tails, sizes)
        damage += found
        tag = int(markers[shard]) >> 32
        if not found and tag != LEGACY_TAG and sound and _tag_of(sound) != tag:
            damage.append(
                ShardDamage(
                    shard,
                    store.shard_range(shard),
                    "mismatch",
                    "its files fail the checksum its done marker recorded (swapped, stale or replaced files)",
                )
            )
    return damage


def _index_findings(
    store: FeatureStore, shard: int, tails: dict[tuple[str, int], bytes | None], sizes: dict[str, int | None]
) -> tuple[list[ShardDamage], list[bytes]]:
    """Missing files and failing index checksums of one shard; the tails of its sound files, for the tag."""
    found, sound = [], []
    frames = store.shard_range(shard)
    for name in store.array_names:
        if (name, shard) not in tails:  # a layout without a checksummed index: nothing to check cheaply
            continue
        raw, want = tails[name, shard], sizes[name]
        if raw is None:
            found.append(ShardDamage(shard, frames, "missing", f"{name} shard file is missing"))
        elif len(raw) < want or not _index_intact(raw[-want:]):
            found.append(
                ShardDamage(shard, frames, "index", f"{name} shard index checksum fails (damaged file)")
            )
        else:
            sound.append(raw)
    return found, sound


def _index_intact(index: bytes) -> bool:
    return google_crc32c.value(index[:-_CRC32C]) == int.from_bytes(index[-_CRC32C:], "little")


def _data_damage(store: FeatureStore, shard: int, marker: int) -> list[ShardDamage]:
    """Decode the whole shard: zstd checksums, finiteness, and the values' crc32 in the marker."""
    frames = store.shard_range(shard)
    try:
        data = store.read_shard(shard)
    except Exception as err:  # noqa: BLE001 - a damaged file raises from whichever codec meets it
        return [ShardDamage(shard, frames, "data", f"cannot be read ({type(err).__name__}: {err})")]
    found = [
        ShardDamage(shard, frames, "nonfinite", f"{name} holds NaN or Inf")
        for name in store.array_names
        if not all_finite(data[name])
    ]
    if marker & _LOW != done_marker(data[name] for name in store.array_names) & _LOW:
        found.append(
            ShardDamage(shard, frames, "data", "values differ from the checksum recorded when it was written")
        )
    return found


def inspect_store(store: FeatureStore, quick: bool = False, progress: bool = False) -> VerifyReport:
    """Every finding about `store`: schema/shape problems, shards not done, damaged done shards."""
    from tqdm import tqdm

    report = VerifyReport(store_problems=_shape_problems(store))
    stored_fp = store.stored_fingerprint
    if stored_fp != store.schema.fingerprint:
        report.store_problems.append(
            f"fingerprint {stored_fp} does not recompute ({store.schema.fingerprint})"
        )
    if any(p.startswith("array") for p in report.store_problems):
        return report
    markers = store.group["done"][: store.num_shards]
    report.not_done = [int(s) for s in np.flatnonzero(markers == 0)]
    report.damage = quick_damage(store)
    if not quick:
        seen = set(report.damaged)
        todo = [s for s in np.flatnonzero(markers).tolist() if s not in seen]
        for shard in tqdm(
            todo, desc="verify", unit="shard", disable=None if progress else True
        ):  # None: TTY only
            report.damage += _data_damage(store, shard, int(markers[shard]))
    return report


def verify_store(store: FeatureStore, check_values: bool = True) -> list[str]:
    """Every problem as one line (empty = the store is complete and sound); see :func:`inspect_store`."""
    return inspect_store(store, quick=not check_values).lines(store)


def _shape_problems(store: FeatureStore) -> list[str]:
    problems = []
    for name, (frame_shape, _) in store.frame_shapes().items():
        try:
            arr = store.array(name)
        except (StoreError, KeyError):
            problems.append(f"array {name} is missing")
            continue
        want = (store.num_frames, *frame_shape)
        if tuple(arr.shape) != want:
            problems.append(f"array {name} has shape {tuple(arr.shape)}, schema says {want}")
    return problems


# ---- repair and the checks other commands run --------------------------------------------------------


def mark_not_done(store: FeatureStore, shards: Iterable[int]) -> list[int]:
    """Clear the done markers of `shards` (the repair): the same extract command recomputes them."""
    if not store.writable:
        raise StoreError(f"{store.path} is open read-only; cannot repair it")
    shards = sorted(set(shards))
    for shard in shards:
        store.group["done"][shard] = 0
    return shards


def repair_hint(store: FeatureStore) -> str:
    return (
        f"run `a4g store verify --repair {store.path}`, then the `a4g extract ... --out {store.path}` "
        "command that made it (it recomputes exactly the damaged shards)"
    )


@dataclass
class VerifyOutcome:
    """What ``a4g store verify [--repair]`` found and did."""

    store: FeatureStore
    report: VerifyReport
    repaired: list[int] = field(default_factory=list)
    """Damaged shards marked not done (``--repair``)."""


def verify_location(
    path: str, *, quick: bool = False, repair: bool = False, progress: bool = False
) -> VerifyOutcome:
    """Open the store at `path`, inspect it, and with `repair` mark its damaged shards not done."""
    from a4g.store.feature_store import FeatureStore

    store = FeatureStore.open(path, writable=repair)
    report = inspect_store(store, quick=quick, progress=progress)
    repaired = mark_not_done(store, report.damaged) if repair and report.damaged else []
    return VerifyOutcome(store, report, repaired)


def check_for_training(store: FeatureStore) -> None:
    """Refuse a store with damaged done shards before training reads it (the quick check: indexes only).

    Raises StoreError naming the shards and the repair command.
    """
    damage = quick_damage(store)
    if damage:
        lines = "\n  ".join(str(d) for d in damage[:20]) + ("\n  ..." if len(damage) > 20 else "")
        raise StoreError(
            f"{store.path} has {len({d.shard for d in damage})} damaged shard(s):\n  {lines}\n"
            + repair_hint(store)
        )


def check_after_extraction(store: FeatureStore, owned: Sequence[int]) -> list[int]:
    """An extraction ends with the quick check of every done shard, so it never says 'complete' over damage.

    Raises StoreError for damage in `owned` shards (this process's); returns the damaged shards of
    other ranks (they may be recomputing them right now, so that is not this process's failure).
    """
    damage = quick_damage(store)
    mine = set(owned)
    own = [d for d in damage if d.shard in mine]
    if own:
        lines = "\n  ".join(str(d) for d in own[:20])
        raise StoreError(
            f"{store.path}: {len({d.shard for d in own})} done shard(s) are damaged:\n  {lines}\n"
            "rerun the same command: it recomputes them"
        )
    return sorted({d.shard for d in damage})
