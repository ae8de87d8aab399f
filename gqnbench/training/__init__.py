"""Training: the one training loop for every model, validation NLL, checkpoints and resume,
time to target and robustness sweeps, distributed data parallel.

May import ``gqnbench.data``, ``gqnbench.models``, ``gqnbench.metrics``, ``gqnbench.results``
(and the harness's environment helpers); writes ``training_run``, ``time_to_target``,
``sweep`` and ``samples`` results files; never imports the report.

Modules: loop (``train``, top to bottom), and the loop's parts:
session (the update loop), run_files (names, paths, reuse/continue/refuse an existing run),
run_state (checkpointed state, wall clock, the results document), schedule (when to
log/evaluate/checkpoint/stop), divergence (NaN loss, NLL blow-up), interrupt (Ctrl-C, SIGTERM),
run_log (curve points, TensorBoard, progress bar); evaluation (validation NLL, baselines),
checkpoint (atomic checkpoints, weights, what a run saves and restores), data_source (scenes + validation episode),
distributed (torchrun / DDP), runner (jobs in fresh worker processes), time_to_target, sweep, samples, budgets (default targets and the suite's
per-preset budgets), suite (the suite's training part on that budget). Submodules load on first use, so importing the package is cheap.

The step itself (model objective, Adam, autocast, grad scaler, compile, flush-to-zero) is
built by :func:`gqnbench.step.build_step`, the same builder the cost harness times.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "train": "gqnbench.training.loop",
    "TrainResult": "gqnbench.training.loop",
    "run_name": "gqnbench.training.loop",
    "run_time_to_target": "gqnbench.training.time_to_target",
    "run_sweep": "gqnbench.training.sweep",
    "write_samples": "gqnbench.training.samples",
    "load_trained_model": "gqnbench.training.samples",
    "load_training_data": "gqnbench.training.data_source",
    "SuiteBudget": "gqnbench.training.budgets",
    "SUITE_BUDGETS": "gqnbench.training.budgets",
    "suite_budget": "gqnbench.training.budgets",
    "default_target": "gqnbench.training.budgets",
    "run_suite_training": "gqnbench.training.suite",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gqnbench.training' has no attribute {name!r}")
