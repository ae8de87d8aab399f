"""Interruption: a first Ctrl-C finishes the current step, checkpoints and marks the run ``interrupted``.

A second Ctrl-C raises ``KeyboardInterrupt`` at once, possibly mid-update; the loop then keeps
the last periodic checkpoint rather than save weights, optimizer and RNG states that may be
between two consistent states. A ``KeyboardInterrupt`` raised by the caller's per-step
callback comes at a step boundary, where the state is consistent and is checkpointed:
:meth:`InterruptFlag.call_at_boundary` records which case it is.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


class InterruptFlag:
    """First SIGINT asks for a clean stop at the end of the step; the second interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.at_boundary = False  # True while the state is consistent (a step boundary)
        self._previous: Any = None

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def call_at_boundary(self, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn`` marked as a step boundary; if it raises, the mark stays for the handler to read."""
        self.at_boundary = True
        fn(*args)
        self.at_boundary = False
