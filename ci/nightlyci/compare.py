"""Compare a run with its pinned baseline: one row per benchmark metric and training run.

Statuses: ``ok``; ``regressed`` (gates); ``improved`` (faster/lighter beyond the limit: a
hint to refresh the baseline, never a gate); ``unstable`` (the timing spread in either run
is above the stability limits, so its median is reported but does not gate); ``missing``
(in the baseline, not in this run: gates unless ``missing.gate`` is false or
``--allow-missing``); ``new`` (no baseline yet: listed, not gated); ``failed`` (a training
run diverged or a run step exited non-zero: gates); ``no-data`` (a value was not measured).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from gqnbench.report.deltas import MISSING, NEW, paired, pct_change, presence
from nightlyci import EXIT_OK, EXIT_REGRESSION
from nightlyci.collect import BenchStats, RunMetrics, TrainResult
from nightlyci.thresholds import StabilityLimits, Thresholds

GATING = ("regressed", "missing", "failed")
ENV_KEYS = ("torch", "cuda_version", "gpu_name", "cpu_count", "torch_threads", "python")


@dataclass(frozen=True)
class Row:
    metric: str  # time | memory | nll | step
    key: str
    status: str
    baseline: float | None = None
    current: float | None = None
    delta: float | None = None  # percent for time/memory, nats for nll
    limit: str = ""
    note: str = ""
    gates: bool = False
    unit: str = ""  # s | bytes | nats


@dataclass
class Verdict:
    current: str
    baseline: str
    device_name: str | None
    thresholds: str
    rows: list[Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.gates]

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.regressions else EXIT_OK

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "current": self.current,
            "baseline": self.baseline,
            "device_name": self.device_name,
            "thresholds": self.thresholds,
            "counts": self.counts(),
            "regressions": [asdict(r) for r in self.regressions],
            "rows": [asdict(r) for r in self.rows],
            "warnings": self.warnings,
        }


def instability(b: BenchStats, limits: StabilityLimits) -> list[str]:
    """Why a benchmark's timing is too noisy to gate on (empty when it is steady)."""
    reasons = []
    if b.rounds < limits.min_rounds:
        reasons.append(f"{b.rounds} rounds < {limits.min_rounds}")
    if b.median_s > 0 and b.iqr_s / b.median_s > limits.max_iqr_over_median:
        reasons.append(f"IQR/median {b.iqr_s / b.median_s:.3g} > {limits.max_iqr_over_median:g}")
    if b.mean_s > 0 and b.stddev_s / b.mean_s > limits.max_stddev_over_mean:
        reasons.append(f"stddev/mean {b.stddev_s / b.mean_s:.3g} > {limits.max_stddev_over_mean:g}")
    return reasons


def _time_row(key: str, base: BenchStats, cur: BenchStats, th: Thresholds) -> Row:
    delta = pct_change(cur.median_s, base.median_s)
    limit = f"+{th.time.max_slowdown_pct:g}%"
    common = dict(metric="time", key=key, baseline=base.median_s, current=cur.median_s, delta=delta, limit=limit)
    noisy = [f"current: {r}" for r in instability(cur, th.stability)] + [
        f"baseline: {r}" for r in instability(base, th.stability)
    ]
    if noisy:
        return Row(**common, status="unstable", note="; ".join(noisy) + " (not gated)", unit="s")
    if delta > th.time.max_slowdown_pct:
        return Row(**common, status="regressed", gates=True, note="median slower than allowed", unit="s")
    if delta < -th.time.report_speedup_pct:
        return Row(**common, status="improved", note="faster: consider refreshing the baseline", unit="s")
    return Row(**common, status="ok", unit="s")


def _memory_row(key: str, base: BenchStats, cur: BenchStats, th: Thresholds) -> Row | None:
    if base.peak_memory_bytes is None and cur.peak_memory_bytes is None:
        return None
    limit = f"+{th.memory.max_increase_pct:g}%"
    if base.peak_memory_bytes is None or cur.peak_memory_bytes is None:
        side = "baseline" if base.peak_memory_bytes is None else "current run"
        return Row(
            metric="memory",
            key=key,
            status="no-data",
            baseline=base.peak_memory_bytes,
            current=cur.peak_memory_bytes,
            limit=limit,
            note=f"peak_memory_bytes not recorded in the {side}",
            unit="bytes",
        )
    delta = pct_change(cur.peak_memory_bytes, base.peak_memory_bytes)
    grew = cur.peak_memory_bytes - base.peak_memory_bytes
    common = dict(
        metric="memory",
        key=key,
        baseline=base.peak_memory_bytes,
        current=cur.peak_memory_bytes,
        delta=delta,
        limit=limit,
        unit="bytes",
    )
    if delta > th.memory.max_increase_pct and grew > th.memory.min_increase_bytes:
        return Row(**common, status="regressed", gates=True, note="peak memory above allowed")
    if delta < -th.memory.max_increase_pct and -grew > th.memory.min_increase_bytes:
        return Row(**common, status="improved", note="lighter: consider refreshing the baseline")
    return Row(**common, status="ok")


def _nll_row(key: str, base: TrainResult, cur: TrainResult, th: Thresholds) -> Row:
    common = dict(metric="nll", key=key, baseline=base.val_nll, current=cur.val_nll, unit="nats")
    if math.isnan(base.val_nll):
        return Row(**common, status="no-data", note=f"baseline has no NLL (status {base.status})")
    lo, hi = th.nll_band(key, base.val_nll, base.nll_constant if base.nll_constant is not None else cur.nll_constant)
    common.update(limit=f"[{lo:.2f}, {hi:.2f}]")
    if cur.status != "completed" or math.isnan(cur.val_nll):
        return Row(
            **common,
            status="failed",
            gates=True,
            note=f"training {cur.status} at step {cur.final_step}, no validation NLL after {cur.steps} steps",
        )
    delta = cur.val_nll - base.val_nll
    common.update(delta=delta)
    if cur.val_nll > hi:
        return Row(**common, status="regressed", gates=True, note="NLL above its band (worse)")
    if cur.val_nll < lo:
        return Row(**common, status="regressed", gates=True, note="NLL below its band (a changed model or metric?)")
    return Row(**common, status="ok")


def _one_sided_row(metric: str, key: str, side: str, value: float, unit: str, gate_missing: bool, what: str = "") -> Row:
    """A key in only one of the two runs: ``missing`` gates as configured, ``new`` never does."""
    if side == MISSING:
        note = f"{what}in the baseline but not in this run" + ("" if gate_missing else " (not gated)")
        return Row(metric=metric, key=key, status=MISSING, baseline=value, gates=gate_missing, unit=unit, note=note)
    note = "no baseline value: refresh the baseline to start gating it"
    return Row(metric=metric, key=key, status=NEW, current=value, unit=unit, note=note)


def compare_runs(
    current: RunMetrics, baseline: RunMetrics, thresholds: Thresholds, *, allow_missing: bool = False
) -> Verdict:
    device_name = current.device_name or baseline.device_name
    verdict = Verdict(
        current=current.source, baseline=baseline.source, device_name=device_name, thresholds=thresholds.describe()
    )
    gate_missing = thresholds.gate_missing and not allow_missing
    rows = verdict.rows
    for step in current.steps:
        rc, note = step.get("rc"), step.get("note") or ""
        if rc == 0 or (rc is None and not note):
            continue
        gates = bool(step.get("gates", True)) and rc is not None
        detail = note if rc is None else f"exit {rc}" + (f" ({note})" if note else "") + f", log {step.get('log')}"
        rows.append(
            Row(
                metric="step",
                key=str(step.get("name")),
                status="failed" if gates else "no-data",
                gates=gates,
                note=detail + ("" if gates else " (does not gate)"),
            )
        )
    for key, cur, base in paired(current.benchmarks, baseline.benchmarks):
        side = presence(cur, base)
        if side is not None:
            rows.append(_one_sided_row("time", key, side, (cur or base).median_s, "s", gate_missing))
            continue
        th = thresholds.for_benchmark(key, cur.group, device_name)
        rows.append(_time_row(key, base, cur, th))
        mem = _memory_row(key, base, cur, th)
        if mem is not None:
            rows.append(mem)
    for key, cur_t, base_t in paired(current.training, baseline.training):
        side = presence(cur_t, base_t)
        if side is not None:
            rows.append(_one_sided_row("nll", key, side, (cur_t or base_t).val_nll, "nats", gate_missing, "training run "))
        else:
            rows.append(_nll_row(key, base_t, cur_t, thresholds))
    verdict.warnings.extend(_environment_warnings(current, baseline))
    return verdict


def _environment_warnings(current: RunMetrics, baseline: RunMetrics) -> list[str]:
    out = []
    if current.device_name and baseline.device_name and current.device_name != baseline.device_name:
        out.append(
            f"device mismatch: this run is '{current.device_name}', the baseline '{baseline.device_name}': "
            "timings are not comparable"
        )
    if current.quick is not None and baseline.quick is not None and current.quick != baseline.quick:
        out.append(f"this run has quick={current.quick} but the baseline quick={baseline.quick}")
    for k in ENV_KEYS:
        a, b = current.environment.get(k), baseline.environment.get(k)
        if a is not None and b is not None and a != b:
            out.append(f"environment differs: {k} is {a!r} now, {b!r} in the baseline")
    if not baseline.benchmarks and current.benchmarks:
        out.append("the baseline has no benchmarks: timings and memory are not gated")
    return out
