"""Run many training jobs in fresh worker processes (or in this one), in order, never losing one.

Sweeps and time-to-target runs go through :func:`run_jobs`. By default (``isolate=True``)
jobs run in a spawned process pool of ``processes`` workers, each of which turns on
flush-to-zero before its first torch op (see :mod:`gqnbench.step`) and uses
``cores // processes`` torch threads; so a job runs at full speed whatever this process did
before (e.g. a cost harness that already started torch's thread pool). ``isolate=False`` and
``processes=1`` run the jobs here, one after another (tests, debugging).

Workers are *spawned*, so a script that calls a sweep or time to target must guard its
entry point with ``if __name__ == "__main__":`` (the workers re-import the main module).

Ctrl-C: the workers finish their current step, checkpoint and stop; queued jobs are
cancelled and ``KeyboardInterrupt`` reaches the caller. Re-running continues from the
checkpoints.

``executor``: a :class:`gqnbench.training.executors.ClusterExecutor` runs each job as its own
cluster job (Slurm through submitit) instead, recorded under ``out_dir``; jobs that have not
finished come back as ``{"unfinished": True, "state": ...}`` entries (see that module).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from gqnbench.presets import get_preset
from gqnbench.step import flush_denormals_for_process
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


def _worker_init(threads: int) -> None:
    flush_denormals_for_process()  # first: the torch thread pool must inherit it
    torch.set_num_threads(threads)


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
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(threads or max(1, available_cores() // workers),),
            )
            try:
                futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update(1)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
    return [results[i] for i in range(len(jobs))]
