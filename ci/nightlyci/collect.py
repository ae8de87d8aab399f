"""Read what a nightly run measured into one plain structure, :class:`RunMetrics`.

A run folder holds (``ci/nightly.py run`` writes them; any of them may be absent):

- ``bench.json``: pytest-benchmark JSON (merged over presets; ``bench-<preset>.json`` are
  read if there is no merged file). Each benchmark gives its median/IQR/mean/stddev in
  seconds and ``extra_info.peak_memory_bytes``.
- ``train/**/*.json``: gqnbench ``training_run`` results files; the final validation NLL
  (nats per image) of each is checked against a band.
- ``nightly.json``: the run's manifest (device, device name, steps and their exit codes).

A pinned baseline file (:mod:`nightlyci.baseline`) loads into the same structure, so any two
of them compare alike.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gqnbench.results import ResultsError, as_float, read_result

RUN_MANIFEST = "nightly.json"
BENCH_FILE = "bench.json"
TRAIN_DIR = "train"
INFO_FIELDS = ("model", "preset", "mode", "batch", "dtype", "compiled", "device")


class CollectError(ValueError):
    """A run folder or file is missing or malformed (the message names the file)."""


@dataclass(frozen=True)
class BenchStats:
    """One pytest-benchmark result: seconds per step (median and spread), peak memory in bytes."""

    key: str
    group: str | None
    median_s: float
    iqr_s: float
    mean_s: float
    stddev_s: float
    rounds: int
    peak_memory_bytes: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "median_s": self.median_s,
            "iqr_s": self.iqr_s,
            "mean_s": self.mean_s,
            "stddev_s": self.stddev_s,
            "rounds": self.rounds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, key: str, d: dict[str, Any], where: str) -> BenchStats:
        try:
            return cls(
                key=key,
                group=d.get("group"),
                median_s=float(d["median_s"]),
                iqr_s=float(d["iqr_s"]),
                mean_s=float(d["mean_s"]),
                stddev_s=float(d["stddev_s"]),
                rounds=int(d["rounds"]),
                peak_memory_bytes=None if d.get("peak_memory_bytes") is None else float(d["peak_memory_bytes"]),
                info=dict(d.get("info") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollectError(f"{where}: benchmark {key!r} is malformed ({exc!r})") from exc


@dataclass(frozen=True)
class TrainResult:
    """A short fixed-seed training run: validation NLL in nats per image after ``steps`` steps."""

    key: str
    model: str
    preset: str
    seed: int
    steps: int
    val_nll: float  # NaN when the run produced none (diverged, interrupted)
    nll_constant: float | None
    status: str
    final_step: int | None = None
    run_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "preset": self.preset,
            "seed": self.seed,
            "steps": self.steps,
            "val_nll": None if math.isnan(self.val_nll) else self.val_nll,
            "nll_constant": self.nll_constant,
            "status": self.status,
            "final_step": self.final_step,
            "run_file": self.run_file,
        }

    @classmethod
    def from_dict(cls, key: str, d: dict[str, Any], where: str) -> TrainResult:
        try:
            return cls(
                key=key,
                model=str(d["model"]),
                preset=str(d["preset"]),
                seed=int(d["seed"]),
                steps=int(d["steps"]),
                val_nll=as_float(d.get("val_nll")),
                nll_constant=None if d.get("nll_constant") is None else float(d["nll_constant"]),
                status=str(d.get("status", "completed")),
                final_step=None if d.get("final_step") is None else int(d["final_step"]),
                run_file=d.get("run_file"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollectError(f"{where}: training entry {key!r} is malformed ({exc!r})") from exc


@dataclass
class RunMetrics:
    """Everything the check compares, from a run folder or a baseline file."""

    source: str
    device: str | None = None
    device_name: str | None = None
    quick: bool | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    benchmarks: dict[str, BenchStats] = field(default_factory=dict)
    training: dict[str, TrainResult] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)  # from the manifest: name, rc, ...
    bench_files: list[str] = field(default_factory=list)
    cpu_model: str | None = None  # pytest-benchmark machine_info.cpu.brand_raw
    gpu_name: str | None = None  # a training_run's or the manifest's environment.gpu_name

    def failed_steps(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if s.get("gates", True) and s.get("rc") not in (0, None)]


def train_key(model: str, preset: str, seed: int, steps: int) -> str:
    return f"train:{model}-{preset}-seed{seed}-{steps}steps"


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CollectError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise CollectError(f"{path}: not valid JSON ({exc})") from exc


def bench_cpu_model(path: Path) -> str | None:
    """The CPU model pytest-benchmark recorded (py-cpuinfo's brand string), if any."""
    doc = _load_json(path)
    cpu = ((doc.get("machine_info") or {}).get("cpu") or {}) if isinstance(doc, dict) else {}
    return cpu.get("brand_raw") or None


def parse_benchmark_json(path: Path) -> dict[str, BenchStats]:
    """pytest-benchmark JSON -> {benchmark fullname: stats}."""
    doc = _load_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise CollectError(f"{path}: not pytest-benchmark JSON (no 'benchmarks' list)")
    out: dict[str, BenchStats] = {}
    for i, bench in enumerate(doc["benchmarks"]):
        if not isinstance(bench, dict) or not isinstance(bench.get("stats"), dict):
            raise CollectError(f"{path}: benchmarks[{i}] has no 'stats' object")
        key = bench.get("fullname") or bench.get("name")
        if not key:
            raise CollectError(f"{path}: benchmarks[{i}] has neither 'fullname' nor 'name'")
        stats = bench["stats"]
        extra = bench.get("extra_info") or {}
        try:
            peak = extra.get("peak_memory_bytes")
            out[key] = BenchStats(
                key=key,
                group=bench.get("group"),
                median_s=float(stats["median"]),
                iqr_s=float(stats["iqr"]),
                mean_s=float(stats["mean"]),
                stddev_s=float(stats["stddev"]),
                rounds=int(stats["rounds"]),
                peak_memory_bytes=None if peak is None else float(peak),
                info={k: extra[k] for k in INFO_FIELDS if k in extra},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollectError(f"{path}: benchmark {key!r}: stats field missing or not a number ({exc!r})") from exc
    return out


def parse_training_run(path: Path) -> TrainResult:
    """A gqnbench ``training_run`` file -> its NLL after the requested number of steps."""
    try:
        doc = read_result(path, "training_run")
    except ResultsError as exc:
        raise CollectError(str(exc)) from exc
    try:
        model, preset, seed = str(doc["model"]), str(doc["preset"]), int(doc["seed"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CollectError(f"{path}: training_run lacks model/preset/seed ({exc!r})") from exc
    final = doc.get("final") or {}
    requested = ((doc.get("config") or {}).get("train") or {}).get("steps")
    final_step = final.get("step")
    # Key on the requested step count so a run that stopped early still meets its baseline row.
    steps = int(requested if requested is not None else (final_step or 0))
    return TrainResult(
        key=train_key(model, preset, seed, steps),
        model=model,
        preset=preset,
        seed=seed,
        steps=steps,
        val_nll=as_float(final.get("val_nll")),
        nll_constant=None if final.get("nll_constant") is None else float(final["nll_constant"]),
        status=str(doc.get("status", "completed")),
        final_step=None if final_step is None else int(final_step),
        run_file=str(path),
    )


def _training_runs(folder: Path) -> tuple[dict[str, TrainResult], str | None]:
    out: dict[str, TrainResult] = {}
    gpu_name = None
    for path in sorted(folder.rglob("*.json")):
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # not ours (e.g. a half-written temp file or another tool's JSON)
        if isinstance(head, dict) and head.get("kind") == "training_run":
            run = parse_training_run(path)
            out[run.key] = run
            gpu_name = gpu_name or (head.get("environment") or {}).get("gpu_name")
    return out, gpu_name


def collect_run(path: str | Path) -> RunMetrics:
    """Metrics of a run folder, a single pytest-benchmark JSON, or a baseline file."""
    path = Path(path)
    if path.is_file():
        doc = _load_json(path)
        if isinstance(doc, dict) and doc.get("kind") == "nightly_baseline":
            from nightlyci.baseline import read_baseline

            return read_baseline(path)
        return _infer_device(
            RunMetrics(
                source=str(path),
                benchmarks=parse_benchmark_json(path),
                bench_files=[str(path)],
                cpu_model=bench_cpu_model(path),
            )
        )
    if not path.is_dir():
        raise CollectError(f"{path}: no such run folder or file")
    run = RunMetrics(source=str(path))
    manifest = path / RUN_MANIFEST
    if manifest.is_file():
        try:
            man = read_result(manifest, "nightly_run")
        except ResultsError as exc:
            raise CollectError(str(exc)) from exc
        run.device, run.device_name, run.quick = man.get("device"), man.get("device_name"), man.get("quick")
        run.environment = man.get("environment") or {}
        run.steps = list(man.get("steps") or [])
        run.gpu_name = run.environment.get("gpu_name")
    bench_files = [path / BENCH_FILE] if (path / BENCH_FILE).is_file() else sorted(path.glob("bench-*.json"))
    for bf in bench_files:
        run.benchmarks.update(parse_benchmark_json(bf))
        run.bench_files.append(str(bf))
        run.cpu_model = run.cpu_model or bench_cpu_model(bf)
    if (path / TRAIN_DIR).is_dir():
        run.training, gpu_name = _training_runs(path / TRAIN_DIR)
        run.gpu_name = run.gpu_name or gpu_name
    if not run.benchmarks and not run.training and not run.steps:
        raise CollectError(
            f"{path}: no results found (expected {BENCH_FILE} or bench-*.json, {TRAIN_DIR}/**/*.json training runs, "
            f"or {RUN_MANIFEST})"
        )
    return _infer_device(run)


def _infer_device(run: RunMetrics) -> RunMetrics:
    """Without a manifest, the device type is what every benchmark's extra_info says."""
    if run.device is None:
        devices = {str(b.info.get("device")).split(":")[0] for b in run.benchmarks.values() if b.info.get("device")}
        if len(devices) == 1:
            run.device = devices.pop()
    return run
