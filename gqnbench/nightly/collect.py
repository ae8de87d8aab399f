"""What a nightly run measured, or what a baseline pinned: the shared metrics plus the run's identity.

A run folder holds (``ci/nightly.py run`` writes them; any of them may be absent):

- ``bench.json``: pytest-benchmark JSON (merged over presets; ``bench-<preset>.json`` are
  read if there is no merged file);
- ``train/``: gqnbench ``training_run`` files (the short fixed-seed runs);
- ``nightly.json``: the run's manifest (device, device name, host, plan, steps and their exit codes).

The metrics come from the report's collector (:func:`gqnbench.report.metrics.collect_metrics`)
on exactly the files the run's report step reads, so the gate and ``python -m gqnbench.report
--baseline`` see the same keys and values. A pinned baseline (``ci/baselines/<device>.json``)
loads into the same :class:`RunMetrics`, so any two of them compare alike.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gqnbench.nightly import BASELINE_DIR
from gqnbench.nightly.device import host_from_machine_info
from gqnbench.nightly.schema import HostRecord, NightlyBaseline, NightlyRun, PlanRecord, StepRecord, read_doc, write_doc
from gqnbench.report.inputs import PYTEST_BENCHMARK, ResultSet, load_results
from gqnbench.report.metrics import Metric, collect_metrics, requested_steps
from gqnbench.report.runs import failed_runs, run_info
from gqnbench.results import ResultsError, read_result

RUN_MANIFEST = "nightly.json"
BENCH_FILE = "bench.json"
TRAIN_DIR = "train"


class CollectError(ValueError):
    """A run folder or file is missing or malformed (the message names the file)."""


class MissingBaselineError(FileNotFoundError):
    """No pinned baseline for this device; the message says which file and how to make it."""


@dataclass
class RunMetrics:
    """Everything the check compares, from a run folder, a benchmark file or a baseline file."""

    source: str
    device: str | None = None
    device_name: str | None = None
    quick: bool | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    failed_training: dict[str, str] = field(default_factory=dict)  # val_nll key -> why it has no value
    steps: list[StepRecord] = field(default_factory=list)
    bench_files: list[str] = field(default_factory=list)
    cpu_model: str | None = None  # pytest-benchmark machine_info.cpu.brand_raw
    gpu_name: str | None = None  # a training_run's or the manifest's environment.gpu_name
    host: dict[str, Any] = field(default_factory=dict)  # HostRecord fields; empty: not recorded
    plan: PlanRecord | None = None  # what the run was asked to do (None: a file checked on its own)

    def failed_steps(self) -> list[StepRecord]:
        return [s for s in self.steps if s.gates and s.rc not in (0, None)]

    def of_category(self, category: str) -> dict[str, Metric]:
        return {k: m for k, m in self.metrics.items() if m.category == category}


def run_inputs(folder: Path) -> list[Path]:
    """The results a run folder's report and check read: the benchmark JSON and the training runs."""
    bench = [folder / BENCH_FILE] if (folder / BENCH_FILE).is_file() else sorted(folder.glob("bench-*.json"))
    return bench + ([folder / TRAIN_DIR] if (folder / TRAIN_DIR).is_dir() else [])


def _from_results(run: RunMetrics, results: ResultSet) -> RunMetrics:
    run.metrics = collect_metrics(results)
    for f in failed_runs(results):
        info = run_info(f)
        run.failed_training[f"val_nll/{info['model']}/{info['preset']}"] = (
            f"training {info['status']} at step {info['final_step']}, no validation NLL after {requested_steps(f)} steps"
        )
    benches = results.of_kind(PYTEST_BENCHMARK)
    run.bench_files += [str(f.path) for f in benches]
    machines = [f.doc.get("machine_info") or {} for f in benches]
    run.cpu_model = next((m["cpu"]["brand_raw"] for m in machines if (m.get("cpu") or {}).get("brand_raw")), None)
    if not run.host and machines:
        run.host = {k: v for k, v in host_from_machine_info(machines[0]).items() if v is not None}
    run.gpu_name = run.gpu_name or next(
        (f.environment.get("gpu_name") for f in results.of_kind("training_run") if f.environment.get("gpu_name")), None
    )
    if run.device is None:
        # Without a manifest, the device type is what every benchmark's extra_info says.
        extra = [b.get("extra_info") or {} for f in benches for b in f.doc["benchmarks"]]
        devices = {str(e["device"]).split(":")[0] for e in extra if e.get("device")}
        run.device = devices.pop() if len(devices) == 1 else None
    return run


def _is_baseline(path: Path) -> bool:
    try:
        return read_result(path).get("kind") == "nightly_baseline"
    except ResultsError:
        return False  # pytest-benchmark JSON, or a bad file that load_results names


def collect_run(path: str | Path) -> RunMetrics:
    """Metrics of a run folder, a single pytest-benchmark JSON, or a baseline file."""
    path = Path(path)
    if path.is_file():
        if _is_baseline(path):
            return read_baseline(path)
        return _from_results(RunMetrics(source=str(path)), load_results([path]))
    if not path.is_dir():
        raise CollectError(f"{path}: no such run folder or file")
    run = RunMetrics(source=str(path))
    if (path / RUN_MANIFEST).is_file():
        man = read_doc(path / RUN_MANIFEST, NightlyRun)
        run.device, run.device_name, run.quick, run.plan = man.device, man.device_name, man.quick, man.plan
        run.environment, run.steps = dict(man.environment), list(man.steps)
        run.host = man.host.model_dump(exclude_none=True) if man.host else {}
        run.gpu_name = run.environment.get("gpu_name")
    inputs = run_inputs(path)
    if not inputs and not run.steps:
        raise CollectError(
            f"{path}: no results found (expected {BENCH_FILE} or bench-*.json, {TRAIN_DIR}/**/*.json training runs, "
            f"or {RUN_MANIFEST})"
        )
    return _from_results(run, load_results(inputs)) if inputs else run


def compare_as(current: RunMetrics, baseline: RunMetrics, variant: str, model: str) -> None:
    """Judge ``variant``'s rows of ``current`` against ``model``'s rows of ``baseline`` (``--as-model VARIANT=MODEL``).

    ``current`` keeps ``variant``'s metrics renamed to ``model``'s keys and groups (its own
    ``model`` rows are left out); ``baseline`` loses any ``variant`` rows. For a plugin model
    measured beside the model it modifies, on the host of that model's baseline.
    """
    named = re.compile(rf"(?<=[\[/-]){re.escape(variant)}(?=[-/\]])")
    own = re.compile(rf"(?<=[\[/-]){re.escape(model)}(?=[-/\]])")
    renamed = {}
    for key, m in current.metrics.items():
        if named.search(key):
            new_key = named.sub(model, key)
            renamed[new_key] = dataclasses.replace(
                m, key=new_key, group=named.sub(model, m.group) if m.group else m.group
            )
    current.metrics = {**{k: m for k, m in current.metrics.items() if not own.search(k) and not named.search(k)},
                       **renamed}  # fmt: skip
    current.failed_training = {named.sub(model, k): v for k, v in current.failed_training.items() if not own.search(k)}
    baseline.metrics = {k: m for k, m in baseline.metrics.items() if not named.search(k)}


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


def median_run(runs: list[RunMetrics]) -> RunMetrics:
    """One run whose every metric is the median of ``runs``' (the lower middle one for an even count).

    A baseline pinned from several runs of one commit does not inherit one run's luck: on a 2-core
    host a step's ratio moves by a fifth between runs, more than within one. Each metric is taken
    whole (value, spread, rounds, load) from the run where it is the median; steps and failed
    training are the union, so a failure in any run refuses the pin.
    """
    first = runs[0]
    if len(runs) == 1:
        return first
    names = {r.device_name for r in runs}
    if len(names) > 1:
        raise CollectError(f"cannot pin runs of different devices as one baseline: {sorted(map(str, names))}")
    metrics = {}
    for key in first.metrics:
        values = sorted((r.metrics[key] for r in runs if key in r.metrics), key=lambda m: m.value)
        metrics[key] = values[(len(values) - 1) // 2]
    return dataclasses.replace(
        first,
        source=f"median of {len(runs)} runs: " + ", ".join(r.source for r in runs),
        metrics=metrics,
        steps=[s for r in runs for s in r.steps],
        failed_training={k: v for r in runs for k, v in r.failed_training.items()},
    )


def write_baseline(run: RunMetrics, path: Path, *, force: bool = False) -> Path:
    """Pin ``run``'s metrics at ``path``. Refuses a run whose benchmark or training step failed."""
    failed = run.failed_steps()
    if failed and not force:
        names = ", ".join(f"{s.name} (exit {s.rc})" for s in failed)
        raise CollectError(f"{run.source}: refusing to pin a run with failed steps: {names} (use --force to override)")
    if not run.metrics:
        raise CollectError(f"{run.source}: nothing to pin (no benchmarks and no training runs)")
    if run.failed_training and not force:
        raise CollectError(
            f"{run.source}: refusing to pin training runs that did not complete: {sorted(run.failed_training)} "
            "(use --force)"
        )
    doc = NightlyBaseline(
        device=run.device,
        device_name=run.device_name,
        quick=run.quick,
        host=HostRecord.model_validate(run.host) if run.host else None,
        source_run=run.source,
        plan=run.plan,
        bench_files=run.bench_files,
        metrics=dict(sorted(run.metrics.items())),
    )
    # The run's own environment (versions, threads, GPU), not that of the machine pinning it.
    return write_doc(path, doc, environment=run.environment)


def read_baseline(path: str | Path) -> RunMetrics:
    path = Path(path)
    if not path.is_file():
        raise MissingBaselineError(f"{path}: baseline file not found")
    try:
        doc = read_doc(path, NightlyBaseline)
    except ResultsError as exc:
        raise CollectError(str(exc)) from exc
    if "benchmarks" in (doc.model_extra or {}):
        raise CollectError(
            f"{path}: a baseline in the format before timings were judged as ratios (raw benchmark stats under "
            f"'benchmarks'); pin it again from a new run: {repin_command(doc.device or 'cpu', doc.quick)}"
        )
    return RunMetrics(
        source=str(path),
        device=doc.device,
        device_name=doc.device_name,
        quick=doc.quick,
        environment=dict(doc.environment),
        metrics=dict(doc.metrics),
        bench_files=list(doc.bench_files),
        host=doc.host.model_dump(exclude_none=True) if doc.host else {},
        plan=doc.plan,
    )


def repin_command(device: str, quick: bool | None) -> str:
    """The two commands that measure and pin a baseline for ``device``."""
    flag = " --quick" if quick else ""
    return (f"python ci/nightly.py run --device {device}{flag} --out /tmp/nightly && "
            "python ci/nightly.py baseline --from /tmp/nightly")  # fmt: skip
