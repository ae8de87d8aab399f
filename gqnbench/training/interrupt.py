"""Stopping on a signal: Ctrl-C (SIGINT) and SIGTERM end a command cleanly, with a checkpoint of every run.

In the training loop (:class:`InterruptFlag`) the first SIGINT or SIGTERM asks for a clean stop:
the current step finishes, a checkpoint is written, the run is marked ``interrupted`` and
:class:`Interrupted` is raised. A later SIGINT (a second Ctrl-C) raises at once, possibly
mid-update; the loop then keeps the last periodic checkpoint rather than save weights, optimizer
and RNG states that may be between two consistent states. More SIGTERMs change nothing: systemd,
Slurm and ``timeout`` send it to every process of a command, so a worker gets it both directly
and from its parent, and it is not a request to hurry. A ``KeyboardInterrupt`` raised by the
caller's per-step callback comes at a step boundary, where the state is consistent and is
checkpointed: :meth:`InterruptFlag.call_at_boundary` records which case it is.

:class:`Interrupted` is a ``KeyboardInterrupt`` that names its signal, so the command line exits
with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). Outside the loop, :func:`sigterm_interrupts`
makes SIGTERM raise it the way Python's default handler raises ``KeyboardInterrupt`` on SIGINT.
A worker process that trains runs one after another (:mod:`gqnbench.training.runner`) calls
:func:`defer_stop_signals`: a signal between two runs is remembered, so the next run never starts
(:func:`raise_if_stopping`) and a run being set up stops after its first step. A forked child (a
data-decoding pool, a DataLoader worker) gets Python's default handlers back: its owner ends it
with SIGTERM (``Pool.terminate``), which must not become an exception there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, Any], None]


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal (SIGINT by default): everything written so far is kept."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


# A worker's stop signal that came outside a training loop (set only after defer_stop_signals()).
_deferred: int | None = None
_deferring = False
_active: InterruptFlag | None = None
_installed: list[Handler] = []  # the handlers this module set, while they are set


def _defaults_in_forked_child() -> None:
    for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(signum) in _installed:
            with contextlib.suppress(ValueError):  # not the main thread: nothing of ours was set here
                signal.signal(signum, default)
    _installed.clear()


os.register_at_fork(after_in_child=_defaults_in_forked_child)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def handling(handler: Handler, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """``handler`` for ``signals`` while the block runs (main thread only); an ignored signal stays ignored."""
    previous: dict[int, Any] = {}
    if _main_thread():
        for signum in signals:
            before = signal.getsignal(signum)
            if before is not signal.SIG_IGN:  # nohup, a background job: the caller chose to ignore it
                previous[signum] = before
                signal.signal(signum, handler)
    _installed.append(handler)
    try:
        yield
    finally:
        if handler in _installed:  # a forked child cleared it
            _installed.remove(handler)
        for signum, before in previous.items():
            signal.signal(signum, signal.SIG_DFL if before is None else before)  # None: not set from Python


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def sigterm_interrupts() -> contextlib.AbstractContextManager[None]:
    """SIGTERM raises :class:`Interrupted` while the block runs, as SIGINT raises ``KeyboardInterrupt``."""
    return handling(_raise_interrupted, (signal.SIGTERM,))


def defer_stop_signals() -> None:
    """In a worker process: remember a SIGINT/SIGTERM that comes between runs instead of dying mid-setup."""
    global _deferring

    def remember(signum: int, frame: Any) -> None:
        global _deferred
        _deferred = _deferred or signum

    _deferring = True
    _installed.append(remember)
    for signum in STOP_SIGNALS:
        signal.signal(signum, remember)


def raise_if_stopping() -> None:
    """Raise :class:`Interrupted` if this worker was asked to stop (its next run must not start)."""
    if _deferred is not None:
        raise Interrupted(_deferred)


def active() -> InterruptFlag | None:
    """The training loop's flag while a loop runs in this process, else None."""
    return _active


class InterruptFlag:
    """First SIGINT/SIGTERM asks for a clean stop at the end of the step; a later SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the signal that asked for the stop
        self.at_boundary = False  # True while the state is consistent (a step boundary)
        self._handling = contextlib.ExitStack()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        """Ask for the clean stop (idempotent); in a worker the stop also holds for its later runs."""
        global _deferred
        if self.signum is None:
            self.signum = signum
        if _deferring:
            _deferred = _deferred or signum

    def interrupted(self) -> Interrupted:
        """The exception that ends the loop (SIGINT when another rank asked for the stop)."""
        return Interrupted(self.signum or signal.SIGINT)

    def __enter__(self) -> InterruptFlag:
        global _active
        if _deferred is not None:
            self.request(_deferred)  # came while the run was being set up
        self._handling.enter_context(handling(self._handle))
        _active = self
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise self.interrupted()
        self.request(signum)

    def __exit__(self, *exc: Any) -> None:
        global _active
        _active = None
        self._handling.close()

    def call_at_boundary(self, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn`` marked as a step boundary; if it raises, the mark stays for the handler to read."""
        self.at_boundary = True
        fn(*args)
        self.at_boundary = False
