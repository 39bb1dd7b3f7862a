"""One writer per rank of a store: a lock that a second ``a4g extract`` with the same rank cannot take.

Without it two processes of the same rank compute every shard twice, and each one's clean-up of
leftover temporary files may hit the other's. The second process gets one error naming the store,
the rank and the holder (host, pid, since when).

- **Local folders**: ``fcntl.flock`` on ``<store>/.a4g/writer-rank<R>.lock``, which holds the
  holder's record. The kernel drops the lock when its process dies, however it dies, so a stale
  lock cannot exist; the file itself stays (deleting it would race a process that just opened it).
  On NFS, Linux maps ``flock`` to byte-range locks that the server arbitrates.
- **s3:// and gs://**: an ownership object ``.a4g/writer-rank<R>.json`` created with a conditional
  put (``If-None-Match: *``, atomic on S3 since 2024 and on GCS), renewed every
  :data:`RENEW_S` seconds by a background thread with ``If-Match`` on its own version. A record is
  stale when its process is gone from this host, or when it was not renewed for :data:`LEASE_S`
  seconds (a writer on another host that died); a new writer takes a stale record over with
  ``If-Match`` on the version it judged stale, so two newcomers cannot both win. A writer that
  finds its record taken over stops before its next shard (:meth:`WriterLock.check`). Release
  is a conditional delete, which tensorstore performs as a check followed by a delete (not atomic;
  the worst case is deleting a record another writer took over in that instant, which makes that
  writer stop, never write twice).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from a4g.errors import StoreError
from a4g.store.location import StoreLocation, parse_location

LOCK_DIR = ".a4g"
"""Folder (key prefix) of a store that holds writer locks; not a Zarr node, zarr ignores it."""
LEASE_S = 60.0
RENEW_S = 15.0


@dataclass(frozen=True)
class Holder:
    """Who holds a writer lock."""

    host: str
    pid: int
    started: float
    """Unix time the lock was taken."""
    proc_start: str = ""
    """The process's start time from /proc (Linux), so a reused pid is not taken for the holder."""
    renewed: float = 0.0

    @classmethod
    def me(cls) -> Holder:
        now = time.time()
        return cls(socket.gethostname(), os.getpid(), now, _proc_start(os.getpid()), now)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host} (since {since})"

    def alive(self, now: float) -> bool:
        """Judged from here: this host's processes by pid, other hosts' by the lease."""
        if self.host == socket.gethostname():
            return _proc_start(self.pid) == self.proc_start and _pid_exists(self.pid)
        return now - self.renewed < LEASE_S

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Holder | None:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None  # a record cut short by a kill while it was written: nobody holds it


class WriterLock:
    """A held writer lock; :meth:`release` it when the writing is over (also a context manager)."""

    def __init__(self, location: StoreLocation, rank: int) -> None:
        self.location = location
        self.rank = rank

    def check(self) -> None:
        """Raise StoreError when the lock was lost (an object-store lease taken over)."""

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy(self, holder: Holder | None) -> StoreError:
        who = holder.describe() if holder else "another process (starting up)"
        remote = holder is not None and holder.host != socket.gethostname() and not self.location.is_local
        after = f" (one that died is taken over {LEASE_S:.0f} s after its last renewal)" if remote else ""
        return StoreError(
            f"{self.location}: rank {self.rank} is already being written by {who}; two writers of one "
            f"rank would compute every shard twice. Wait for it to finish or stop it, then rerun{after}"
        )


def acquire_writer(store: str | os.PathLike | StoreLocation, rank: int) -> WriterLock:
    """Take the writer lock of ``rank`` on ``store`` (created as a folder when local and missing)."""
    location = parse_location(store)
    lock = _FileLock(location, rank) if location.is_local else _ObjectLock(location, rank)
    lock.acquire()
    return lock


class _FileLock(WriterLock):
    def acquire(self) -> None:
        folder = self.location.path / LOCK_DIR
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(folder / f"writer-rank{self.rank}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreError(
                f"{self.location}: cannot write there ({err.strerror}); choose another --out or fix its permissions"
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Holder.from_bytes(os.pread(self._fd, 4096, 0))
            os.close(self._fd)
            raise self._busy(holder) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, Holder.me().to_bytes(), 0)

    def release(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class _ObjectLock(WriterLock):
    def acquire(self) -> None:
        import tensorstore as ts

        from a4g.store.kvzarr import NO_VALUE, tensorstore_ready

        tensorstore_ready()
        self._kv = ts.KvStore.open(self.location.kvstore_spec()).result()
        self._key = f"{LOCK_DIR}/writer-rank{self.rank}.json"
        self._me = Holder.me()
        self._generation = (
            self._kv.write(self._key, self._me.to_bytes(), if_equal=NO_VALUE).result().generation
        )
        if not self._generation:
            current = self._kv.read(self._key).result()
            holder = Holder.from_bytes(current.value) if current.state == "value" else None
            if holder is not None and holder.alive(time.time()):
                raise self._busy(holder)
            generation = current.stamp.generation if current.state == "value" else NO_VALUE
            self._generation = (
                self._kv.write(self._key, self._me.to_bytes(), if_equal=generation).result().generation
            )
            if not self._generation:  # another newcomer took it over first
                raise self._busy(Holder.from_bytes(self._kv.read(self._key).result().value))
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="a4g-writer-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            record = Holder(**{**asdict(self._me), "renewed": time.time()}).to_bytes()
            with contextlib.suppress(Exception):  # a network hiccup: retry at the next renewal
                generation = self._kv.write(self._key, record, if_equal=self._generation).result().generation
                if not generation:
                    current = Holder.from_bytes(self._kv.read(self._key).result().value)
                    self._lost = current.describe() if current else "nobody (the record was deleted)"
                    return
                self._generation = generation

    def check(self) -> None:
        if self._lost:
            raise StoreError(
                f"{self.location}: rank {self.rank} lost its writer lock to {self._lost} (this process "
                f"was judged dead); stopping without writing more shards"
            )

    def release(self) -> None:
        if getattr(self, "_stop", None) is None or self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        if not self._lost:
            with contextlib.suppress(Exception):
                self._kv.write(self._key, None, if_equal=self._generation).result()


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _proc_start(pid: int) -> str:
    """Field 22 of /proc/PID/stat (start time in clock ticks); '' where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]
