"""CPU flush-to-zero for training: kept as a name for callers; the setting lives in :mod:`gqnbench.step`.

:func:`flush_denormals_for_process` (before the first torch op of a training process) and the
:func:`flush_denormals` scope are :mod:`gqnbench.step`'s; ``_PROCESS_WIDE`` reads whether the
calling thread flushes denormals now.
"""

from __future__ import annotations

from typing import Any

from gqnbench.step import flush_denormal_enabled, flush_denormals, flush_denormals_for_process

__all__ = ["flush_denormals", "flush_denormals_for_process"]


def __getattr__(name: str) -> Any:
    if name == "_PROCESS_WIDE":
        return flush_denormal_enabled()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
