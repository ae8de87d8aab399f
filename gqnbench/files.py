"""Files that are never half-written, and folders owned by one writer at a time.

**Atomic writes.** :func:`atomic_write_bytes` writes to a temporary file in the same folder,
fsyncs it and renames it into place: a reader sees the old file or the new one, never half of
one, and a write that fails (a full disk: :data:`OUT_OF_SPACE`) leaves the old file as it was.
Every results file, checkpoint, shard and cache file goes through it.

**Locks.** A run (``runs/<name>.lock`` next to its results file), a main-job output folder
(``OUT/.gqnbench.lock``) or a data set being built is written by one process at a time.
:func:`hold_lock` takes an exclusive ``flock`` on the lock file and writes the owner's pid, host
and command into it; the kernel drops the lock when the owner exits, however it exits, so a lock
file left by a killed process is *stale*: the next writer takes it over and says so. A second
writer while the owner lives gets :class:`LockedError`, which names the holder (or waits, for
builders of shared data).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# A write that failed for want of room (no space, over quota, over the file-size limit).
OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file + rename (never a half-written file).

    A write that fails (a full disk) leaves ``path`` as it was and raises the OSError naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file; the user needs to know which
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


LOCK_NAME = ".gqnbench.lock"


class LockedError(ValueError):
    """Another living process is writing the same run or output folder."""


def _owner() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": shlex.join([Path(sys.argv[0]).name or "python", *sys.argv[1:]]) if sys.argv else "python",
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 65536).decode("utf-8", "replace")
        doc = json.loads(text) if text.strip() else {}
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_owner(owner: dict[str, Any]) -> str:
    if not owner:
        return "another process"
    return (
        f"pid {owner.get('pid')} on {owner.get('host')} (started {owner.get('started')}): {owner.get('command')}"
    )


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@contextlib.contextmanager
def hold_lock(
    path: str | os.PathLike, what: str, *, wait: bool = False, log: Callable[[str], None] = _stderr
) -> Iterator[Path]:
    """Own ``path`` (a lock file) while the block runs.

    A living owner gives :class:`LockedError` naming it, or with ``wait`` is waited for (two ranks
    building one data set or cache do it once, one after the other).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_owner(fd)
            os.close(fd)
            raise LockedError(
                f"{what} is being written by another process, {describe_owner(holder)}; "
                f"wait for it to finish or stop it, or write somewhere else (lock file {path})"
            ) from None
        except OSError as exc:  # a file system without flock (some network mounts): carry on unguarded
            os.close(fd)
            log(f"gqnbench: cannot lock {path} ({exc}); nothing stops a second writer of {what}")
            yield path
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous owner removed the file between our open and our lock: try again
    try:
        previous = _read_owner(fd)
        if previous.get("pid"):
            log(
                f"gqnbench: taking over {what}: its lock was left by {describe_owner(previous)}, "
                "which is no longer running"
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(_owner()) + "\n").encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
