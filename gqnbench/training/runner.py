"""Run many training jobs in fresh worker processes (or in this one), in order, never losing one.

Sweeps and time-to-target runs go through :func:`run_jobs`. By default (``isolate=True``)
jobs run in a spawned process pool of ``processes`` workers, each of which turns on
flush-to-zero before its first torch op (see :mod:`gqnbench.step`) and uses
``cores // processes`` torch threads; so a job runs at full speed whatever this process did
before (e.g. a cost harness that already started torch's thread pool). ``isolate=False`` and
``processes=1`` run the jobs here, one after another (tests, debugging).

Workers are *spawned*, so a script that calls a sweep or time to target must guard its
entry point with ``if __name__ == "__main__":`` (the workers re-import the main module).

Ctrl-C (SIGINT) or SIGTERM to this process, to its process group or to a worker stops the whole
call: every worker finishes its current step, checkpoints and stops, queued jobs never start,
and :class:`~gqnbench.training.interrupt.Interrupted` (naming the signal) reaches the caller once
the workers are done; a second Ctrl-C makes them stop at once (see
:mod:`gqnbench.training.interrupt`). A worker whose parent dies, even by ``kill -9``, stops the
same way and exits. Re-running continues from the checkpoints.

``executor``: a :class:`gqnbench.training.executors.ClusterExecutor` runs each job as its own
cluster job (Slurm through submitit) instead, recorded under ``out_dir``; jobs that have not
finished come back as ``{"unfinished": True, "state": ...}`` entries (see that module).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from gqnbench.presets import get_preset
from gqnbench.step import flush_denormals_for_process
from gqnbench.training import interrupt
from gqnbench.training.data_source import load_training_data

if TYPE_CHECKING:
    from gqnbench.training.executors import ClusterExecutor


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """A seed count (``3`` -> 0, 1, 2) or explicit seeds, as a list of ints."""
    return list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]


def prepare_data(preset: str, jobs: Iterable[dict[str, Any]], cache_root: str | Path | None) -> None:
    """Generate/open each distinct data set the ``jobs`` train on (``preset`` + their ``overrides``) once, here.

    Done before the workers start so that worker processes never race to create the same data set.
    """
    for data_cfg in {get_preset(preset, job["overrides"]).data for job in jobs}:
        load_training_data(data_cfg, cache_root)


def _worker_init(threads: int, parent: int | None = None) -> None:
    """Flush-to-zero and ``threads`` torch threads; in a pool worker (``parent``: its pid) the stop rules too."""
    flush_denormals_for_process()  # first: the torch thread pool must inherit it
    torch.set_num_threads(threads)
    if parent is not None:
        interrupt.defer_stop_signals()
        threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True, name="parent-watch").start()


_in_job = False  # a pool worker is running a job (the parent watch lets it finish its clean stop)


def _stop_when_orphaned(parent: int) -> None:
    """Once the parent has died: stop as on SIGTERM (checkpoint), then exit; nobody is left to collect a result."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    while _in_job:
        time.sleep(0.1)
    os._exit(128 + signal.SIGTERM)


def _run_in_worker(fn: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any]) -> dict[str, Any]:
    """``fn(job)`` in a pool worker, unless a stop signal came first (a queued job never starts)."""
    global _in_job
    interrupt.raise_if_stopping()
    _in_job = True
    try:
        return fn(job)
    finally:
        _in_job = False


def run_jobs(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    jobs: Sequence[dict[str, Any]],
    *,
    processes: int = 1,
    isolate: bool = True,
    progress: bool = True,
    desc: str = "runs",
    threads: int | None = None,
    executor: ClusterExecutor | None = None,
    out_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """``[fn(job) for job in jobs]``, possibly in worker processes; ``fn`` must be importable (picklable).

    ``threads``: torch threads per worker (default: this process's cores / workers).
    ``executor`` (with ``out_dir``, where job ids are recorded): one cluster job per job instead;
    entries of unfinished jobs are ``{"unfinished": True, ...}``.
    """
    if executor is not None:
        if out_dir is None:
            raise ValueError("a cluster executor needs out_dir (where the job ids are recorded)")
        return executor.run(fn, jobs, out_dir, desc=desc, progress=progress)
    results: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress, leave=False)
    try:
        if processes <= 1 and not isolate:
            for i, job in enumerate(jobs):
                results[i] = fn(job)
                bar.update(1)
        else:
            workers = max(1, min(processes, len(jobs)))
            _run_pool(fn, jobs, workers, threads or max(1, available_cores() // workers), results, bar)
    finally:
        bar.close()
    return [results[i] for i in range(len(jobs))]


def _run_pool(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    jobs: Sequence[dict[str, Any]],
    workers: int,
    threads: int,
    results: dict[int, dict[str, Any]],
    bar: tqdm,
) -> None:
    """Fill ``results`` from a spawned pool of ``workers``; on a stop signal stop every worker and raise."""
    stop: list[int] = []  # the stop signals seen; the first one is the command's exit status
    ctrl_c: list[int] = []  # the SIGINTs this process itself received

    def forward(signum: int) -> None:
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signum)
            except (OSError, TypeError):  # exited meanwhile, or not started yet (no pid)
                pass

    def on_signal(signum: int, frame: Any = None, from_worker: bool = False) -> None:
        # Workers take SIGTERM as "finish the step, checkpoint, stop" however often it comes (they may
        # also get it directly); only a second Ctrl-C to this process is handed on as SIGINT: stop at
        # once. A worker that reports its own stop first (the same Ctrl-C reached it sooner) does not
        # count as a Ctrl-C here, or the one keypress would escalate.
        if not from_worker and signum == signal.SIGINT:
            ctrl_c.append(signum)
        forward(signal.SIGINT if len(ctrl_c) > 1 else signal.SIGTERM)
        stop.append(signum)

    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(threads, os.getpid()),
    )
    with interrupt.handling(on_signal):
        try:
            futures: dict[Future, int] = {pool.submit(_run_in_worker, fn, job): i for i, job in enumerate(jobs)}
            pending = set(futures)
            while pending and not stop:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    if stop:
                        break
                    if isinstance(exc := fut.exception(), KeyboardInterrupt):  # a worker was stopped on its own
                        on_signal(getattr(exc, "signum", signal.SIGINT), from_worker=True)
                    else:
                        results[futures[fut]] = fut.result()
                        bar.update(1)
            if stop:
                for fut in pending:
                    fut.cancel()
                forward(signal.SIGTERM)  # also to a worker started after the signal came
                wait(pending)  # the running runs end at a step boundary with a checkpoint
                raise interrupt.Interrupted(stop[0])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    pool.shutdown(wait=True)
