"""Every comparable number of a result set, under one stable key: the single metric collector.

Used by the report's baseline comparison (:mod:`gqnbench.report.compare`) and by the nightly
regression gate (:mod:`gqnbench.nightly`), so both name, read and pair measurements alike.
Keys, built from what identifies a measurement so two commits, GPUs or configs line up:

- ``bench/<pytest fullname>``                 median seconds (category ``time``); with
  ``/peak_memory`` peak bytes (``memory``); with ``/ratio`` the median over rounds of the round's
  time over the reference matmul's time in the same round (``ratio``, unit ``x ref``: the
  benchmark's cost relative to the machine, from ``extra_info["ratio"]``, see ``benchmarks/conftest.py``)
- ``throughput/<model>/<preset>/<mode>/b<batch>/<dtype>/<eager|compiled>[/<device>]`` median
  seconds (``time``); with ``/peak_memory`` (``memory``)
- ``val_nll/<model>/<preset>``, ``val_mse/<model>/<preset>``: median final validation NLL and
  MSE of the main runs (``nll``, ``mse``); the NLL carries a constant, so gate on the MSE or
  on a band around the NLL (the nightly gate's rule)
- ``time_to_target/<model>/<preset>``: median wall seconds, infinity when most seeds missed
  (``time_to_target``); ``.../steps`` the median steps (``time_to_target_steps``)

All metrics are lower-is-better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gqnbench.report.inputs import PYTEST_BENCHMARK, ResultFile, ResultSet
from gqnbench.report.runs import main_runs, median_inf, run_info
from gqnbench.results import as_float

BENCH_PREFIX = "bench/"
MEMORY_SUFFIX = "/peak_memory"
RATIO_SUFFIX = "/ratio"
RATIO_UNIT = "x ref"


@dataclass(frozen=True)
class Metric:
    """One comparable number: lower is better. ``spread`` is IQR/median where known (noise).

    The fields after ``source`` describe how trustworthy or comparable the value is; the
    report's table ignores them, the nightly gate's rules read them.
    """

    key: str
    category: str
    value: float
    unit: str
    spread: float | None = None
    source: str | None = None
    rounds: int | None = None  # timing rounds behind a median
    cv: float | None = None  # stddev/mean of those rounds
    group: str | None = None  # pytest-benchmark group (the gate's threshold overrides match it)
    nll_constant: float | None = None  # the NLL's data-independent part, nats per image
    setup: str | None = None  # what must match for two values to compare ("30 steps, seed 0", the reference)
    preset: str | None = None  # the size preset it was measured at, where it has one
    load: float | None = None  # the host's load while it was measured (runnable tasks; see benchmarks/conftest.py)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den and not math.isnan(num) and not math.isnan(den) else None


def _dtype(value: object) -> str:
    text = str(value).removeprefix("torch.")
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(text, text)


def timing_metrics(
    key: str,
    stats: dict[str, Any],
    peak: Any,
    source: str,
    group: str | None = None,
    preset: str | None = None,
    load: float | None = None,
) -> list[Metric]:
    """A median time (and the peak memory beside it, when recorded) from one measurement's stats.

    ``stats`` uses pytest-benchmark's names (``median``, ``iqr``, ``mean``, ``stddev``, ``rounds``).
    """
    median = as_float(stats.get("median"))
    rounds = stats.get("rounds")
    context = {"source": source, "group": group, "preset": preset, "load": load}
    out = [
        Metric(
            key,
            "time",
            median,
            "s",
            spread=_ratio(as_float(stats.get("iqr")), median),
            rounds=None if rounds is None else int(rounds),
            cv=_ratio(as_float(stats.get("stddev")), as_float(stats.get("mean"))),
            **context,
        )
    ]
    if peak is not None:
        out.append(Metric(key + MEMORY_SUFFIX, "memory", as_float(peak), "bytes", **context))
    return out


def _ratio_metric(key: str, info: dict[str, Any], **context: Any) -> Metric:
    """The benchmark's cost in units of the reference timed beside it (``benchmarks/conftest.py``)."""
    value = as_float(info.get("ratio"))
    return Metric(
        key + RATIO_SUFFIX,
        "ratio",
        value,
        RATIO_UNIT,
        spread=_ratio(as_float(info.get("ratio_q3")) - as_float(info.get("ratio_q1")), value),
        rounds=info.get("ratio_rounds"),
        cv=_ratio(as_float(info.get("ratio_stddev")), as_float(info.get("ratio_mean"))),
        setup=info.get("ref"),
        **context,
    )


def training_setup(steps: Any, seeds: list[Any]) -> str:
    """The comparability tag of a training metric: requested steps and seeds."""
    return f"{steps} steps, seed {', '.join(str(s) for s in sorted(seeds, key=str))}"


def requested_steps(run: ResultFile) -> Any:
    """The step count a training run was asked for (a run that stopped early keeps its request)."""
    return ((run.doc.get("config") or {}).get("train") or {}).get("steps")


def _bench(f: ResultFile) -> list[Metric]:
    out = []
    for bench in f.doc["benchmarks"]:
        info = bench.get("extra_info") or {}
        key = BENCH_PREFIX + bench["fullname"]
        context = {"group": bench.get("group"), "preset": info.get("preset"), "load": info.get("load")}
        out += timing_metrics(key, bench["stats"], info.get("peak_memory_bytes"), str(f.path), **context)
        if info.get("ratio") is not None:
            out.append(_ratio_metric(key, info, source=str(f.path), **context))
    return out


def _throughput(f: ResultFile) -> list[Metric]:
    out = []
    for row in f.doc.get("throughput") or []:
        device = row.get("device")
        key = "throughput/{}/{}/{}/b{}/{}/{}".format(
            row.get("model"),
            row.get("preset", f.doc.get("preset")),
            row.get("mode"),
            row.get("batch"),
            _dtype(row.get("dtype")),
            "compiled" if row.get("compiled") else "eager",
        ) + (f"/{device}" if device else "")
        stats = {"median": row.get("median_s"), "iqr": row.get("iqr_s")}
        preset, load = row.get("preset", f.doc.get("preset")), row.get("load_avg_1m")
        out += timing_metrics(key, stats, row.get("peak_memory_bytes"), str(f.path), preset=preset, load=load)
    return out


def _training(results: ResultSet) -> list[Metric]:
    runs, _ = main_runs(results)
    by_group: dict[tuple[str, str], list[tuple[dict, ResultFile]]] = {}
    for run in runs:
        info = run_info(run)
        by_group.setdefault((info["model"], str(info["preset"])), []).append((info, run))
    out = []
    for (model, preset), pairs in by_group.items():
        infos = [i for i, _ in pairs]
        src = ", ".join(str(i["file"]) for i in infos)
        steps = requested_steps(pairs[0][1]) or infos[0]["final_step"]
        setup = training_setup(steps, [i["seed"] for i in infos])
        constant = infos[0]["nll_constant"]
        nll = median_inf(i["final_val_nll"] for i in infos)
        mse = median_inf(i["final_val_mse"] for i in infos)
        out.append(
            Metric(
                f"val_nll/{model}/{preset}",
                "nll",
                nll,
                "nats",
                source=src,
                nll_constant=None if math.isnan(constant) else constant,
                setup=setup,
                preset=preset,
            )
        )
        out.append(Metric(f"val_mse/{model}/{preset}", "mse", mse, "", source=src, setup=setup, preset=preset))
    return out


def _time_to_target(f: ResultFile) -> list[Metric]:
    out = []
    preset = f.doc.get("preset")
    for model in dict.fromkeys(r["model"] for r in f.doc["runs"]):
        # A run that failed with an error measured nothing (a miss is a measurement: inf).
        own = [r for r in f.doc["runs"] if r["model"] == model and r.get("status") != "failed"]
        walls = [as_float(r.get("wall_s")) if r["reached"] else math.inf for r in own]
        steps = [as_float(r.get("steps")) if r["reached"] else math.inf for r in own]
        key = f"time_to_target/{model}/{preset}"
        out.append(Metric(key, "time_to_target", median_inf(walls), "s", source=str(f.path)))
        out.append(Metric(key + "/steps", "time_to_target_steps", median_inf(steps), "steps", source=str(f.path)))
    return out


def collect_metrics(results: ResultSet) -> dict[str, Metric]:
    """Every comparable metric of a result set, keyed by its stable name (see the module docstring)."""
    found: list[Metric] = []
    for f in results.of_kind(PYTEST_BENCHMARK):
        found += _bench(f)
    for f in results.of_kind("costs"):
        found += _throughput(f)
    found += _training(results)
    for f in results.of_kind("time_to_target"):
        found += _time_to_target(f)
    out: dict[str, Metric] = {}
    for metric in found:
        # Duplicate keys (e.g. the same benchmark saved twice) keep the first: inputs are read in a stable order.
        out.setdefault(metric.key, metric)
    return out
