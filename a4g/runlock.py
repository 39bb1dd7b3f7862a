"""One writer per output folder: a lock file that names its holder, and the checks that keep a training
run out of folders it must not write into.

Why: two ``a4g train`` on one ``--out`` (issue 10, seeds 0 and 1) both exited 0 after overwriting each
other's checkpoints in turn, and ``run.json`` ended up describing the other run; ``train --out STORE``
wrote checkpoints into a feature store.

How: ``DIR/.a4g.lock`` is locked with ``fcntl.flock`` and holds its holder (pid, host, start time,
command) as JSON. The kernel drops a flock when its process dies, however it dies (SIGKILL, OOM
killer, power cut of a node: the NFS lock lease), so a lock is never left held by a dead process; the
file it leaves is how the next run knows, and it says so ("taking over the lock of pid N"). On a file
system without flock (some FUSE mounts) the holder's pid is checked instead: a dead pid on this host
is taken over with the same warning, anything else is refused. Releasing unlinks the file, and a
process that locked a file already unlinked by a releaser tries again, so two processes can never
both hold the lock of one folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from a4g.errors import RunError

LOCK_FILE = ".a4g.lock"
RUN_MARKERS = ("run.json", "checkpoints")  # what makes a folder an a4g run (an unfinished one included)
STORE_MARKER = "zarr.json"  # the root of a zarr v3 store, which every a4g feature store is
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_ATTEMPTS = 5  # re-tries when a releaser unlinks the file between our open and our flock

Say = Callable[[str], object]


class LockError(RunError):
    """The folder is being written by another process; the message names the folder and the holder."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: written into the lock file, read back for messages."""

    pid: int
    host: str
    started: str  # UTC, ISO 8601
    command: str

    @classmethod
    def me(cls) -> Holder:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        argv = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
        return cls(pid=os.getpid(), host=socket.gethostname(), started=started, command=argv)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}: {self.command}"

    def alive(self) -> bool:
        """Whether the holder still runs; only answerable on its own host (otherwise: assume it does)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's live process
            return True
        return True


class DirLock:
    """An exclusive lock on a folder for one process; ``with DirLock(path, flag="--out"):``.

    ``flag`` and ``what`` only word the messages (``--out /x is in use by a4g train ...``).
    """

    def __init__(self, folder: Path, *, flag: str = "--out", what: str = "a4g train", say: Say = print):
        self.folder, self.flag, self.what, self.say = Path(folder), flag, what, say
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise :class:`LockError` naming the holder. The folder must exist."""
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise LockError(
                    f"{self.flag} {self.folder}: cannot create {self.path} ({err.strerror})"
                ) from None
            try:
                previous = self._lock(fd)
                if self._still_linked(fd):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # a releaser unlinked the file we locked: lock the new one
        else:
            raise LockError(f"{self.flag} {self.folder}: could not take {self.path}; try again")
        self._fd = fd
        if previous is not None and previous.pid != os.getpid():
            self.say(
                f"warning: {self.flag} {self.folder} was locked by {previous.describe()}, which is no longer "
                "running (killed?); taking the lock over"
            )
        try:
            _write_holder(fd, Holder.me())
        except OSError as err:  # e.g. a full disk: say so before any work starts
            self.release()
            raise LockError(f"{self.flag} {self.folder}: cannot write {self.path} ({err.strerror})") from None

    def release(self) -> None:
        """Unlink the lock file, then unlock (in that order: see the module docstring)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _lock(self, fd: int) -> Holder | None:
        """flock ``fd``; returns the holder a dead process left in the file (None: the file was empty)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy(_read_holder(fd)) from None
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                raise
            previous = _read_holder(fd)  # no flock here: judge the holder by its pid
            if previous is not None and previous.pid != os.getpid() and previous.alive():
                raise self._busy(previous) from None
            return previous
        return _read_holder(fd)

    def _busy(self, holder: Holder | None) -> LockError:
        who = holder.describe() if holder else "another process"
        return LockError(
            f"{self.flag} {self.folder} is in use by {who}; wait for it to finish or stop it, or choose "
            f"another {self.flag} (two {self.what} on one folder would overwrite each other's files)"
        )

    def _still_linked(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False


def _read_holder(fd: int) -> Holder | None:
    """The holder recorded in an open lock file; None when it is empty or unreadable."""
    try:
        text = os.pread(fd, 4096, 0).decode()
        return Holder(**json.loads(text)) if text.strip() else None
    except (OSError, ValueError, TypeError):
        return None


def _write_holder(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(asdict(holder)) + "\n").encode(), 0)
    os.fsync(fd)


# ------------------------------------------------------------------------------------ run folders


def enclosing_store(path: Path) -> Path | None:
    """The feature store ``path`` is (or lies inside), or None."""
    here = Path(path).absolute()
    for folder in (here, *here.parents):
        if (folder / STORE_MARKER).is_file():
            return folder
    return None


def check_run_dir(run: Path, store: Path | None = None, flag: str = "--out") -> None:
    """Refuse a run folder that is a feature store, lies inside one, or holds files of something else.

    A folder that is missing, empty (but for a lock left by a killed run) or an a4g run passes; so an
    unfinished run, killed before its first checkpoint, can still be resumed or restarted.
    """
    run = Path(run)
    inside = enclosing_store(run)
    if inside is not None or (store is not None and run.absolute() == Path(store).absolute()):
        where = "is" if inside is None or inside == run.absolute() else f"lies inside {inside}, which is"
        raise RunError(
            f"{flag} {run} {where} a feature store; give the run its own folder "
            f"(e.g. {flag} runs/{run.name}-run): a run writes run.json, checkpoints/ and logs/"
        )
    if not run.is_dir():
        return
    names = sorted(p.name for p in run.iterdir() if p.name != LOCK_FILE)
    if names and not any(marker in names for marker in RUN_MARKERS):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise RunError(
            f"{flag} {run} already holds files that are not an a4g run ({shown}); choose a new or empty "
            "folder so nothing of it is overwritten"
        )


@contextlib.contextmanager
def claim_run_dir(
    run: Path, store: Path | None = None, *, say: Say = print, hold: bool = True, flag: str = "--out"
) -> Iterator[None]:
    """Check ``run`` (:func:`check_run_dir`), create it and hold its lock while the body runs.

    ``hold=False`` (every rank but the first of a multi-process launch) checks only: one lock per
    launch. A folder this call created is removed again when the body leaves it empty (a refusal
    right after the claim writes nothing).
    """
    check_run_dir(run, store, flag)
    created = not Path(run).exists()
    if not hold:
        yield
        return
    Path(run).mkdir(parents=True, exist_ok=True)
    try:
        with DirLock(run, flag=flag, say=say):
            check_run_dir(run, store, flag)  # again under the lock: another process may have written
            yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                Path(run).rmdir()  # only when empty
