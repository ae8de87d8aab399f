"""Owning an output folder, and knowing whether the machine was shared while we measured.

**Locks.** A run (``runs/<name>.lock`` next to its results file) or a main-job output folder
(``OUT/.gqnbench.lock``) is written by one process at a time. :func:`hold_lock` takes an
exclusive ``flock`` on the lock file and writes the owner's pid, host and command into it;
the kernel drops the lock when the owner exits, however it exits, so a lock file left by a
killed process is *stale*: the next writer takes it over and says so. A second writer while
the owner lives gets :class:`LockedError`, which names the holder.

**Machine load.** :func:`machine_load` records the load average and the other gqnbench
processes running on this machine (not this process, its ancestors, its children, or
processes of its own process group, e.g. a sweep's worker processes). Timings taken while
another gqnbench process ran are flagged (``concurrent``) in the results files.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import shlex
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
def hold_lock(path: str | os.PathLike, what: str, log: Callable[[str], None] = _stderr) -> Iterator[Path]:
    """Own ``path`` (a lock file) while the block runs; :class:`LockedError` if a living process owns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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


# -- machine load -------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of ``pid`` from /proc, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), int(fields[2])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def is_gqnbench_command(argv: list[str]) -> bool:
    """``gqnbench ...``, ``python -m gqnbench ...`` or ``python -m gqnbench.report ...``."""
    for i, arg in enumerate(argv[:4]):
        base = os.path.basename(arg)
        if base == "gqnbench" or (i > 0 and argv[i - 1] == "-m" and (arg == "gqnbench" or arg.startswith("gqnbench."))):
            return True
    return False


def other_gqnbench_processes() -> list[dict[str, Any]]:
    """gqnbench processes on this machine that are not this process, its relatives or its process group."""
    if not Path("/proc").is_dir():
        return []
    me = os.getpid()
    my_group = os.getpgrp()
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    ancestors, pid = set(), me
    while pid in stats and pid not in ancestors:
        ancestors.add(pid)
        pid = stats[pid][0]
    others = []
    for pid, (_, group) in stats.items():
        if pid in ancestors or group == my_group:
            continue
        chain, p = set(), pid  # a descendant of ours has us among its ancestors
        while p in stats and p not in chain and p != me:
            chain.add(p)
            p = stats[p][0]
        if p == me:
            continue
        argv = _cmdline(pid)
        if is_gqnbench_command(argv):
            others.append({"pid": pid, "command": shlex.join(argv)[:300]})
    return others


def machine_load() -> dict[str, Any]:
    """The 1-minute load average, the core count and the other gqnbench processes running now."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = None
    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_1m": load1,
        "cpu_count": os.cpu_count(),
        "other_gqnbench": other_gqnbench_processes(),
    }


def load_record(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a results file stores about a timed stage: the load before and after, and the flag."""
    others = {p["pid"]: p for p in [*before.get("other_gqnbench", []), *after.get("other_gqnbench", [])]}
    return {"before": before, "after": after, "concurrent": bool(others), "other_gqnbench": list(others.values())}
