"""The conditions a number was measured under: versions, device, commit, and the machine's load.

:func:`capture_environment` is stamped into every results file. :func:`machine_load` records the
load average and the other gqnbench processes running on this machine (not this process, its
ancestors, its children, or processes of its own process group, e.g. a sweep's worker
processes); timings taken while another gqnbench process ran are flagged (``concurrent``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
from pathlib import Path
from typing import Any


def _git(cwd: str | os.PathLike | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd or Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        out = _git(cwd, "rev-parse", "--short=12", "HEAD")
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = _git(cwd, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    return commit + ("-dirty" if dirty else "")


def capture_environment(device: str | None = None, dtype: str | None = None) -> dict[str, Any]:
    """Versions, device, threads and commit: the conditions every number is measured under."""
    import torch

    from gqnbench import __version__

    env: dict[str, Any] = {
        "gqnbench": __version__,
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "device": device,
        "dtype": dtype,
    }
    if torch.cuda.is_available():
        env["cuda_version"] = torch.version.cuda
        env["gpu_name"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
    try:
        import numpy

        env["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    return env


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
