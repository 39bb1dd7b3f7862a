"""zarr-python's ``Store`` on a tensorstore kvstore: the store's small Zarr metadata on S3 or GCS.

Why: the shard data of a remote store goes through tensorstore (see :mod:`a4g.store.shards`); the
group, the schema attributes, the video index and the done markers are a few small Zarr nodes that
the rest of a4g reads and writes with zarr-python. This adapter lets zarr-python use the same
tensorstore client, so one S3 stack with one set of credentials serves the whole store (zarr's own
route, fsspec + s3fs + aiobotocore, would be a second client configured a second way).

It maps each ``Store`` method onto one kvstore call; tensorstore futures are awaitable from
zarr's event loop. ``set_if_not_exists`` is a conditional write (``If-None-Match: *`` on S3).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

import tensorstore as ts
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.buffer.core import default_buffer_prototype

from a4g.errors import StoreError

NO_VALUE = b"\x02"
"""tensorstore's storage generation "no value": a write conditioned on it only creates (measured)."""


_USED_IN: int | None = None  # pid of the process that first used tensorstore


def tensorstore_ready() -> None:
    """Call before each first use of tensorstore in an object: refuses a forked child of a process that
    used it. tensorstore runs thread pools that a fork does not copy and aborts such a child (measured:
    SIGABRT, "fork() use detected"); a clear error is better than a killed DataLoader worker."""
    global _USED_IN
    if _USED_IN is None:
        _USED_IN = os.getpid()
    elif _USED_IN != os.getpid():
        raise StoreError(
            "a remote store is read through tensorstore, which cannot run in a process forked after its "
            "parent used it; start worker processes with the 'spawn' method (see a4g.store.shards)"
        )


class KvZarrStore(Store):
    """A zarr-python Store whose keys live in the tensorstore kvstore ``spec`` (a folder spec)."""

    supports_writes = True
    supports_deletes = True
    supports_listing = True

    def __init__(self, spec: dict[str, Any], *, read_only: bool = False) -> None:
        super().__init__(read_only=read_only)
        self.spec = spec
        self._kv: ts.KvStore | None = None

    @property
    def kv(self) -> ts.KvStore:
        if self._kv is None:
            tensorstore_ready()
            self._kv = ts.KvStore.open(self.spec).result()
        return self._kv

    def with_read_only(self, read_only: bool = False) -> KvZarrStore:
        return type(self)(self.spec, read_only=read_only)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KvZarrStore) and (self.spec, self.read_only) == (other.spec, other.read_only)

    def __str__(self) -> str:
        return (
            f"kvstore:{self.spec.get('driver')}://{self.spec.get('bucket', '')}/{self.spec.get('path', '')}"
        )

    async def get(
        self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        result = await self.kv.read(key, byte_range=_slice(byte_range))
        if result.state != "value":
            return None
        return prototype.buffer.from_bytes(result.value)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        return (await self.kv.read(key, byte_range=slice(0, 0))).state == "value"

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        await self.kv.write(key, value.to_bytes())

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self._check_writable()
        await self.kv.write(key, value.to_bytes(), if_equal=NO_VALUE)

    async def delete(self, key: str) -> None:
        self._check_writable()
        await self.kv.write(key, None)

    async def list(self) -> AsyncIterator[str]:
        for key in await self.kv.list():
            yield key.decode()

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await self.kv.list(_prefix_range(prefix)):
            yield key.decode()

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        names = {
            k.decode()[len(prefix) :].split("/", 1)[0] for k in await self.kv.list(_prefix_range(prefix))
        }
        for name in sorted(names):
            yield name


def _prefix_range(prefix: str) -> ts.KvStore.KeyRange:
    if not prefix:
        return ts.KvStore.KeyRange()
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return ts.KvStore.KeyRange(prefix, end)


def _slice(byte_range: ByteRequest | None) -> slice | None:
    """zarr's byte request as tensorstore's ``byte_range`` slice (a negative start: the last bytes)."""
    if byte_range is None:
        return None
    if isinstance(byte_range, RangeByteRequest):
        return slice(byte_range.start, byte_range.end)
    if isinstance(byte_range, OffsetByteRequest):
        return slice(byte_range.offset, None)
    if isinstance(byte_range, SuffixByteRequest):
        return slice(-byte_range.suffix, None)
    raise TypeError(f"unexpected byte range {byte_range!r}")
