"""The nightly gate: its rules on top of the shared comparison rows, and the verdict they give.

:func:`gqnbench.report.compare.compare_rows` pairs the two runs' metrics and gives each key its
delta and a status at the gate's per-benchmark limit (``ratio.max_slowdown_pct``,
``memory.max_increase_pct`` with their overrides). The gate then only decides, per row:

- **timings are judged as ratios**: a benchmark's ``/ratio`` row (its time over the
  reference matmul's in the same rounds) gates at ``ratio.max_slowdown_pct``; its absolute
  median is ``shown``, never judged, since a host of the same class may be twice as fast or slow;
- **not comparable**: a ratio against another reference than the baseline's ``failed``s;
- **busy**: a ratio measured while the load (runnable tasks) exceeded ``busy.max_load_per_core`` x the
  CPUs (in either run) is shown with the load and not judged;
- **unstable**: a ratio whose spread (IQR/median, stddev/mean, rounds) is too wide in either
  run is reported but does not gate;
- **memory floor**: a memory change smaller than ``min_increase_bytes`` is ``ok``;
- **improved**: better than ``report_speedup_pct`` (a hint to refresh the baseline, never a gate);
- **NLL band**: the validation NLL must stay in baseline +- a tolerance (or an explicit band)
  in nats, instead of the percent threshold; a training run that did not finish is ``failed``;
- **missing / new**: a metric only in the baseline gates when this run's plan would have
  produced it (the same benchmark invocations, or the same training) unless ``missing.gate``
  is false or ``--allow-missing``; a metric only in this run is ``new`` and the verdict says
  which presets have no baseline rows; a memory figure one side did not record is ``no-data``;
- **steps**: a run step (benchmarks, training) that exited non-zero is ``failed``.

Statuses: ``ok``, ``regressed``, ``improved``, ``unstable``, ``busy``, ``shown``, ``missing``,
``new``, ``failed``, ``no-data``; ``regressed``, ``missing`` and ``failed`` rows gate. Only the
categories the gate has rules for (time, ratio, memory, nll) are listed; the rest stay in the
run's report. The verdict also says how this run's host compares with the baseline's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gqnbench.nightly import EXIT_OK, EXIT_REGRESSION
from gqnbench.nightly.collect import RunMetrics
from gqnbench.nightly.device import compare_hosts, describe_host
from gqnbench.nightly.schema import NightlyVerdict, VerdictRow
from gqnbench.nightly.thresholds import StabilityLimits, Thresholds
from gqnbench.report.compare import Comparison, compare_rows
from gqnbench.report.deltas import MISSING, NEW
from gqnbench.report.metrics import MEMORY_SUFFIX, Metric

GATED_CATEGORIES = ("time", "ratio", "memory", "nll")
ENV_KEYS = ("torch", "cuda_version", "gpu_name", "torch_threads", "python")
# The plan fields that decide which rows a run has: equal fields, same rows expected.
PLAN_FIELDS = {
    "bench": ("bench_presets", "preset_args", "bench_dir", "bench_args"),
    "train": ("models", "train_preset", "train_steps", "seed", "train_args"),
}
JUDGED = "timings judged as ratios to the reference matmul timed in the same rounds; absolute times shown only"


@dataclass
class Verdict:
    current: str
    baseline: str
    device_name: str | None
    thresholds: str
    host: str = ""
    rows: list[VerdictRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[VerdictRow]:
        return [r for r in self.rows if r.gates]

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.regressions else EXIT_OK

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def doc(self) -> NightlyVerdict:
        return NightlyVerdict(
            passed=self.exit_code == EXIT_OK,
            exit_code=self.exit_code,
            current=self.current,
            baseline=self.baseline,
            device_name=self.device_name,
            thresholds=self.thresholds,
            host=self.host,
            counts=self.counts(),
            regressions=self.regressions,
            rows=self.rows,
            warnings=self.warnings,
        )


def instability(m: Metric, limits: StabilityLimits) -> list[str]:
    """Why a ratio is too noisy to gate on (empty when it is steady or its spread is unknown)."""
    reasons = []
    if m.rounds is not None and m.rounds < limits.min_rounds:
        reasons.append(f"{m.rounds} rounds < {limits.min_rounds}")
    if m.spread is not None and m.spread > limits.max_iqr_over_median:
        reasons.append(f"IQR/median {m.spread:.3g} > {limits.max_iqr_over_median:g}")
    if m.cv is not None and m.cv > limits.max_stddev_over_mean:
        reasons.append(f"stddev/mean {m.cv:.3g} > {limits.max_stddev_over_mean:g}")
    return reasons


def usable_cpus(run: RunMetrics) -> int | None:
    """The CPUs the run's processes could use: what its load is measured against."""
    return run.host.get("usable_cpus") or run.host.get("logical_cpus") or run.environment.get("cpu_count")


def busy_note(m: Metric, cpus: int | None, th: Thresholds) -> str | None:
    """'load L on N CPUs > limit' when ``m`` was measured on a busy host, else None."""
    if not th.is_busy(m.load, cpus):
        return None
    return f"load {m.load:.2f} on {cpus} CPUs > {th.busy.max_load_per_core:g} x {cpus}"


def _row(
    row: Comparison, status: str, *, limit: str = "", note: str = "", gates: bool = False, delta: float | None = None
) -> VerdictRow:
    """The shared row's key and values with the gate's judgement; ``delta`` defaults to the shared percent."""
    delta = row.delta_pct if delta is None else delta
    return VerdictRow(
        metric=row.category,
        key=row.key,
        status=status,
        baseline=row.baseline.value if row.baseline else None,
        current=row.current.value if row.current else None,
        delta=None if math.isnan(delta) else delta,  # NaN: no delta (one side missing, or failed)
        limit=limit,
        note=note,
        gates=gates,
        unit=row.unit,
    )


def _ratio(row: Comparison, th: Thresholds, cpus: tuple[int | None, int | None]) -> VerdictRow:
    limit = f"+{th.ratio.max_slowdown_pct:g}%"
    cur, base = row.current, row.baseline
    if cur.setup and base.setup and cur.setup != base.setup:
        note = f"not comparable: reference {cur.setup} in this run, {base.setup} in the baseline (pin it again)"
        return _row(row, "failed", limit=limit, note=note, gates=True)
    busy = [f"{side}: {n}" for side, m, c in (("current", cur, cpus[0]), ("baseline", base, cpus[1]))
            if (n := busy_note(m, c, th))]  # fmt: skip
    if busy:
        return _row(row, "busy", limit=limit, note="not judged (busy host): " + "; ".join(busy))
    noisy = [f"current: {r}" for r in instability(cur, th.stability)]
    noisy += [f"baseline: {r}" for r in instability(base, th.stability)]
    if noisy:
        return _row(row, "unstable", limit=limit, note="; ".join(noisy) + " (not gated)")
    if row.regression:
        return _row(row, "regressed", limit=limit, note="slower relative to the reference than allowed", gates=True)
    if row.delta_pct < -th.ratio.report_speedup_pct:
        return _row(row, "improved", limit=limit, note="faster: consider refreshing the baseline")
    return _row(row, "ok", limit=limit)


def _memory(row: Comparison, th: Thresholds) -> VerdictRow:
    limit = f"+{th.memory.max_increase_pct:g}%"
    grew = row.current.value - row.baseline.value
    if row.regression and grew > th.memory.min_increase_bytes:
        return _row(row, "regressed", limit=limit, note="peak memory above allowed", gates=True)
    if row.status == "improved" and -grew > th.memory.min_increase_bytes:
        return _row(row, "improved", limit=limit, note="lighter: consider refreshing the baseline")
    return _row(row, "ok", limit=limit)


def _nll(row: Comparison, th: Thresholds) -> VerdictRow:
    cur, base = row.current, row.baseline
    if math.isnan(base.value):
        return _row(row, "no-data", note="the baseline has no NLL", delta=math.nan)
    if cur.setup != base.setup and cur.setup and base.setup:
        note = f"not comparable: this run trained {cur.setup}, the baseline {base.setup}"
        return _row(row, "failed", note=note, gates=True, delta=math.nan)
    constant = base.nll_constant if base.nll_constant is not None else cur.nll_constant
    lo, hi = th.nll_band(row.key, base.value, constant)
    limit, delta = f"[{lo:.2f}, {hi:.2f}]", cur.value - base.value
    if math.isnan(cur.value):
        return _row(row, "failed", limit=limit, note="no validation NLL", gates=True, delta=math.nan)
    if cur.value > hi:
        return _row(row, "regressed", limit=limit, note="NLL above its band (worse)", gates=True, delta=delta)
    if cur.value < lo:
        note = "NLL below its band (a changed model or metric?)"
        return _row(row, "regressed", limit=limit, note=note, gates=True, delta=delta)
    return _row(row, "ok", limit=limit, delta=delta)


def same_plan(current: RunMetrics, baseline: RunMetrics, part: str) -> bool:
    """Whether this run's plan would produce the baseline's ``part`` ("bench" or "train") rows.

    Without both plans (a benchmark file, a baseline pinned without one) the quick flags decide.
    """
    if current.plan is not None and part in current.plan.skip:
        return False
    if current.plan is None or baseline.plan is None:
        return current.quick is None or baseline.quick is None or current.quick == baseline.quick
    fields = PLAN_FIELDS[part]
    return current.quick == baseline.quick and all(
        getattr(current.plan, f) == getattr(baseline.plan, f) for f in fields
    )


def _one_sided(row: Comparison, current: RunMetrics, baseline: RunMetrics, gate_missing: bool) -> VerdictRow:
    timing = row.key.removesuffix(MEMORY_SUFFIX)
    if row.category == "memory" and timing != row.key:
        # The benchmark ran on both sides; only one recorded its peak memory.
        if row.status == MISSING and timing in current.metrics:
            return _row(row, "no-data", note="peak_memory_bytes not recorded in the current run")
        if row.status == NEW and timing in baseline.metrics:
            return _row(row, "no-data", note="peak_memory_bytes not recorded in the baseline")
    if row.status == NEW:
        return _row(row, NEW, note="no baseline row: pin a baseline from a run that has it to start gating it")
    what = "training run " if row.category == "nll" else ""
    if not same_plan(current, baseline, "train" if row.category == "nll" else "bench"):
        return _row(row, MISSING, note=f"{what}in the baseline, not in this run's plan (not gated)")
    note = f"{what}in the baseline but not in this run" + ("" if gate_missing else " (not gated)")
    return _row(row, MISSING, note=note, gates=gate_missing)


def _step_rows(current: RunMetrics) -> list[VerdictRow]:
    rows = []
    for step in current.steps:
        if step.rc == 0 or (step.rc is None and not step.note):
            continue
        gates = step.gates and step.rc is not None
        note = (
            step.note
            if step.rc is None
            else f"exit {step.rc}" + (f" ({step.note})" if step.note else "") + f", log {step.log}"
        )
        status = "failed" if gates else "no-data"
        rows.append(VerdictRow(metric="step", key=step.name, status=status, gates=gates,
                               note=note + ("" if gates else " (does not gate)")))  # fmt: skip
    return rows


def _shared_threshold(th: Thresholds, metric: Metric) -> float:
    """The fraction the shared engine judges a metric at; the NLL band replaces it for NLLs."""
    pct = {"time": th.ratio.max_slowdown_pct, "ratio": th.ratio.max_slowdown_pct, "memory": th.memory.max_increase_pct}
    return pct.get(metric.category, th.nll.rel_tol_of_excess * 100.0) / 100.0


def check(current: RunMetrics, baseline: RunMetrics, thresholds: Thresholds, *, allow_missing: bool = False) -> Verdict:
    """The gate's verdict on ``current`` against ``baseline``: shared rows, then the rules above."""
    device_name = current.device_name or baseline.device_name
    verdict = Verdict(current.source, baseline.source, device_name, thresholds.describe(), host_line(current, baseline))
    gate_missing = thresholds.gate_missing and not allow_missing
    cpus = (usable_cpus(current), usable_cpus(baseline))

    def limits(m: Metric) -> Thresholds:
        return thresholds.for_benchmark(m.key, m.group, device_name)

    shared = compare_rows(current.metrics, baseline.metrics, lambda m: _shared_threshold(limits(m), m))
    verdict.rows += _step_rows(current)
    for row in shared:
        if row.category not in GATED_CATEGORIES:
            continue
        if row.category == "nll" and row.key in current.failed_training:
            verdict.rows.append(_row(row, "failed", note=current.failed_training[row.key], gates=True, delta=math.nan))
        elif row.status in (MISSING, NEW):
            verdict.rows.append(_one_sided(row, current, baseline, gate_missing))
        elif row.category == "time":
            verdict.rows.append(_row(row, "shown", note="absolute time: shown, not judged"))
        elif row.category == "ratio":
            verdict.rows.append(_ratio(row, limits(row.current), cpus))
        else:
            rule = {"memory": _memory, "nll": _nll}[row.category]
            verdict.rows.append(rule(row, limits(row.current)))
    verdict.warnings += environment_warnings(current, baseline) + no_baseline_rows(shared)
    return verdict


def host_line(current: RunMetrics, baseline: RunMetrics) -> str:
    """How this run's host compares with the baseline's, and what the gate judges then."""
    if not current.host or not baseline.host:
        which = "the baseline's" if not baseline.host else "this run's"
        return f"host unknown: {which} host is not recorded; {JUDGED}"
    same, differ = compare_hosts(current.host, baseline.host)
    changes = ", ".join(f"{k} {baseline.host[k]} -> {current.host[k]}" for k in differ)
    if same:
        also = f" (differs in {changes})" if differ else ""
        return f"host: same class as the baseline's, {describe_host(current.host)}{also}; {JUDGED}"
    return (
        f"host differs: baseline {describe_host(baseline.host)}; this {describe_host(current.host)} "
        f"(differs in {changes}); {JUDGED}"
    )


def no_baseline_rows(shared: list[Comparison]) -> list[str]:
    """One line per preset (or key without one) whose rows this run has and the baseline lacks."""
    by_preset: dict[str, list[Comparison]] = {}
    for row in shared:
        if row.status == NEW and row.category in GATED_CATEGORIES:
            by_preset.setdefault(row.current.preset or "", []).append(row)
    out = []
    for preset, rows in sorted(by_preset.items()):
        kinds = sorted({r.category for r in rows})
        names = sorted({r.current.group or r.key.removesuffix(MEMORY_SUFFIX) for r in rows})
        shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
        what = f"the {preset} preset" if preset else "these keys"
        out.append(f"no baseline rows for {what}: {len(rows)} {'/'.join(kinds)} row(s) not gated ({shown}); "
                   "pin a baseline from a run that has them")  # fmt: skip
    return out


def environment_warnings(current: RunMetrics, baseline: RunMetrics) -> list[str]:
    out = []
    if current.device_name and baseline.device_name and current.device_name != baseline.device_name:
        out.append(f"device mismatch: this run is '{current.device_name}', the baseline '{baseline.device_name}'")
    if current.quick is not None and baseline.quick is not None and current.quick != baseline.quick:
        out.append(f"this run has quick={current.quick} but the baseline quick={baseline.quick}")
    for k in ENV_KEYS:
        a, b = current.environment.get(k), baseline.environment.get(k)
        if a is not None and b is not None and a != b:
            out.append(f"environment differs: {k} is {a!r} now, {b!r} in the baseline")
    if current.of_category("time") and not (current.of_category("ratio") and baseline.of_category("ratio")):
        why = "the baseline has no ratio rows" if current.of_category("ratio") else "this run timed no reference"
        out.append(f"no timing is judged: {why} (ratios to the reference matmul are what the gate judges)")
    return out
