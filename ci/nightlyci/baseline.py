"""Pinned baselines: ``ci/baselines/<device name>.json``, written only on purpose.

A baseline is a copy of one run's medians, spreads, memory peaks and NLLs, so later runs
compare against a fixed reference instead of "the last run" (which would let a slow drift
pass one small step at a time). It is a gqnbench results file of kind ``nightly_baseline``::

    {"schema": "gqnbench.nightly_baseline/1", "kind": "nightly_baseline", "created": ...,
     "environment": {...the run's...}, "device": "cuda", "device_name": "nvidia-h100-80gb-hbm3",
     "quick": false, "source_run": "...", "bench_files": [...],
     "benchmarks": {"<pytest fullname>": {"group", "median_s", "iqr_s", "mean_s", "stddev_s",
                                          "rounds", "peak_memory_bytes", "info": {...}}},
     "training": {"train:<model>-<preset>-seed<k>-<N>steps": {"model", "preset", "seed", "steps",
                  "val_nll", "nll_constant", "status", "final_step", "run_file"}}}
"""

from __future__ import annotations

import shlex
from pathlib import Path

from gqnbench.results import ResultsError, read_result, write_result
from nightlyci import BASELINE_DIR
from nightlyci.collect import BenchStats, CollectError, RunMetrics, TrainResult

KIND = "nightly_baseline"


class MissingBaselineError(FileNotFoundError):
    """No pinned baseline for this device; the message says which file and how to make it."""


def baseline_path(device_name: str, folder: Path = BASELINE_DIR) -> Path:
    return folder / f"{device_name}.json"


def missing_baseline_message(
    expected: Path, run_dir: str | Path | None, device_name: str, out: Path | None = None
) -> str:
    src = shlex.quote(str(run_dir)) if run_dir is not None else "<run folder>"
    target = f" --out {shlex.quote(str(out))}" if out is not None else ""
    return (
        f"no pinned baseline for device '{device_name}': expected file {expected}\n"
        f"Check the run's numbers are sane, then create the baseline from it with:\n"
        f"    python ci/nightly.py baseline --from {src} --device-name {device_name}{target}\n"
        f"and commit {expected}. (Baselines are never taken from 'the last run' automatically.)"
    )


def write_baseline(run: RunMetrics, path: Path, *, force: bool = False) -> Path:
    """Pin ``run`` as the baseline at ``path``. Refuses a run whose benchmark or training step failed."""
    failed = run.failed_steps()
    if failed and not force:
        names = ", ".join(f"{s.get('name')} (exit {s.get('rc')})" for s in failed)
        raise CollectError(f"{run.source}: refusing to pin a run with failed steps: {names} (use --force to override)")
    if not run.benchmarks and not run.training:
        raise CollectError(f"{run.source}: nothing to pin (no benchmarks and no training runs)")
    bad_training = [t.key for t in run.training.values() if t.status != "completed"]
    if bad_training and not force:
        raise CollectError(
            f"{run.source}: refusing to pin training runs that did not complete: {bad_training} (use --force)"
        )
    payload = {
        "device": run.device,
        "device_name": run.device_name,
        "quick": run.quick,
        "source_run": run.source,
        "bench_files": run.bench_files,
        "benchmarks": {k: b.to_dict() for k, b in sorted(run.benchmarks.items())},
        "training": {k: t.to_dict() for k, t in sorted(run.training.items())},
    }
    # The run's own environment (versions, threads, GPU), not that of the machine pinning it.
    return write_result(path, KIND, payload, environment=run.environment or {})


def read_baseline(path: str | Path) -> RunMetrics:
    path = Path(path)
    if not path.is_file():
        raise MissingBaselineError(f"{path}: baseline file not found")
    try:
        doc = read_result(path, KIND)
    except ResultsError as exc:
        raise CollectError(str(exc)) from exc
    benches, training = doc.get("benchmarks"), doc.get("training")
    if not isinstance(benches, dict) or not isinstance(training, dict):
        raise CollectError(f"{path}: baseline needs 'benchmarks' and 'training' objects")
    return RunMetrics(
        source=str(path),
        device=doc.get("device"),
        device_name=doc.get("device_name"),
        quick=doc.get("quick"),
        environment=doc.get("environment") or {},
        benchmarks={k: BenchStats.from_dict(k, v, str(path)) for k, v in benches.items()},
        training={k: TrainResult.from_dict(k, v, str(path)) for k, v in training.items()},
        bench_files=list(doc.get("bench_files") or []),
    )
