"""Per-metric regression limits, loaded from one JSON file (``ci/thresholds.json``).

JSON rather than TOML so Python 3.10 needs no extra package. Layout::

    {"time":      {"max_slowdown_pct": 10},            # median slower than baseline by more -> regression
     "memory":    {"max_increase_pct": 10, "min_increase_bytes": 1048576},
     "nll":       {"abs_tol_nats": 0.5, "rel_tol_of_excess": 0.05, "bands": {"<train key>": [lo, hi]}},
     "stability": {"max_iqr_over_median": 0.1, "max_stddev_over_mean": 0.2, "min_rounds": 3},
     "missing":   {"gate": true},
     "overrides": [{"device": "cpu-*", "match": "*compiled*", "time": {...}, "memory": {...},
                    "stability": {...}}]}

Keys starting with "_" are comments. ``overrides`` apply in order to benchmarks whose key or
group matches the ``match`` glob (default all) on devices matching the ``device`` glob
(default all); later entries win.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ThresholdsError(ValueError):
    """The thresholds file is unreadable or names an unknown setting."""


@dataclass(frozen=True)
class TimeLimits:
    max_slowdown_pct: float = 10.0  # gate: current median > baseline median * (1 + pct/100)
    report_speedup_pct: float = 10.0  # not a gate: say "improved" so the baseline can be refreshed


@dataclass(frozen=True)
class MemoryLimits:
    max_increase_pct: float = 10.0
    # An increase must also exceed this many bytes: allocator rounding is not a regression.
    min_increase_bytes: float = 1024 * 1024


@dataclass(frozen=True)
class NLLLimits:
    # Band = baseline +- max(abs_tol_nats, rel_tol_of_excess * (baseline NLL - NLL constant)).
    # The constant (0.5*ln(2*pi) per pixel value) dominates the NLL, so a tolerance relative
    # to the whole NLL would hide any change in what the model learned.
    abs_tol_nats: float = 0.5
    rel_tol_of_excess: float = 0.05
    bands: dict[str, list[float]] = field(default_factory=dict)  # explicit [lo, hi] per training key


@dataclass(frozen=True)
class StabilityLimits:
    max_iqr_over_median: float = 0.10
    max_stddev_over_mean: float = 0.20
    min_rounds: int = 3


@dataclass(frozen=True)
class Thresholds:
    time: TimeLimits = field(default_factory=TimeLimits)
    memory: MemoryLimits = field(default_factory=MemoryLimits)
    nll: NLLLimits = field(default_factory=NLLLimits)
    stability: StabilityLimits = field(default_factory=StabilityLimits)
    gate_missing: bool = True
    overrides: tuple[dict[str, Any], ...] = ()
    source: str = "<defaults>"

    def for_benchmark(self, key: str, group: str | None, device_name: str | None) -> Thresholds:
        """These limits with every matching override applied (later overrides win)."""
        out = self
        for ov in self.overrides:
            if not fnmatch.fnmatchcase(device_name or "", ov.get("device", "*")):
                continue
            pattern = ov.get("match", "*")
            if not (fnmatch.fnmatchcase(key, pattern) or (group and fnmatch.fnmatchcase(group, pattern))):
                continue
            out = dataclasses.replace(
                out,
                time=_merge(out.time, ov.get("time"), f"{self.source}: overrides.time"),
                memory=_merge(out.memory, ov.get("memory"), f"{self.source}: overrides.memory"),
                stability=_merge(out.stability, ov.get("stability"), f"{self.source}: overrides.stability"),
            )
        return out

    def nll_band(self, key: str, baseline_nll: float, nll_constant: float | None) -> tuple[float, float]:
        """The accepted [lo, hi] validation NLL (nats per image) for training run ``key``."""
        if key in self.nll.bands:
            lo, hi = self.nll.bands[key]
            return float(lo), float(hi)
        excess = abs(baseline_nll - nll_constant) if nll_constant is not None else abs(baseline_nll)
        tol = max(self.nll.abs_tol_nats, self.nll.rel_tol_of_excess * excess)
        return baseline_nll - tol, baseline_nll + tol

    def describe(self) -> str:
        return (
            f"time: median > +{self.time.max_slowdown_pct:g}% | "
            f"memory: peak > +{self.memory.max_increase_pct:g}% (and > {self.memory.min_increase_bytes / 2**20:g} MiB) | "
            f"NLL: outside baseline +- max({self.nll.abs_tol_nats:g} nats, "
            f"{self.nll.rel_tol_of_excess * 100:g}% of NLL above constant) | "
            f"unstable: IQR/median > {self.stability.max_iqr_over_median:g} or stddev/mean > "
            f"{self.stability.max_stddev_over_mean:g} or rounds < {self.stability.min_rounds}"
            + "".join(f" | override {_describe_override(ov)}" for ov in self.overrides)
        )


def _describe_override(ov: dict[str, Any]) -> str:
    where = f"device {ov.get('device', '*')}, match {ov.get('match', '*')}"
    changes = [
        f"{section}.{name}={value:g}"
        for section in ("time", "memory", "stability")
        for name, value in (ov.get(section) or {}).items()
        if not name.startswith("_")
    ]
    return f"[{where}]: {', '.join(changes) or 'no changes'}"


def _merge(current: Any, changes: dict[str, Any] | None, where: str) -> Any:
    if not changes:
        return current
    if not isinstance(changes, dict):
        raise ThresholdsError(f"{where}: expected an object, got {type(changes).__name__}")
    known = {f.name: f for f in dataclasses.fields(current)}
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name.startswith("_"):
            continue
        if name not in known:
            raise ThresholdsError(f"{where}: unknown setting {name!r}; known: {', '.join(sorted(known))}")
        if name == "bands":
            if not isinstance(value, dict) or not all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
                for v in value.values()
            ):
                raise ThresholdsError(f"{where}.bands: expected {{training key: [lo, hi]}} in nats")
            clean[name] = {k: [float(v[0]), float(v[1])] for k, v in value.items()}
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ThresholdsError(f"{where}.{name}: expected a non-negative number, got {value!r}")
        clean[name] = int(value) if name == "min_rounds" else float(value)
    return dataclasses.replace(current, **clean)


def load_thresholds(path: str | Path | None) -> Thresholds:
    """Read a thresholds file; ``None`` gives the built-in defaults. Unknown keys are errors."""
    if path is None:
        return Thresholds()
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ThresholdsError(f"{path}: thresholds file not found") from exc
    except json.JSONDecodeError as exc:
        raise ThresholdsError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ThresholdsError(f"{path}: expected a JSON object at the top level")
    sections = {"time", "memory", "nll", "stability", "missing", "overrides"}
    unknown = [k for k in doc if not k.startswith("_") and k not in sections]
    if unknown:
        raise ThresholdsError(f"{path}: unknown section(s) {unknown}; known: {', '.join(sorted(sections))}")
    base = Thresholds(source=str(path))
    missing = doc.get("missing", {})
    if not isinstance(missing, dict) or not isinstance(missing.get("gate", True), bool):
        raise ThresholdsError(f'{path}: "missing" must be {{"gate": true|false}}')
    overrides = doc.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, dict) for o in overrides):
        raise ThresholdsError(f"{path}: overrides must be a list of objects")
    for i, ov in enumerate(overrides):
        bad = [k for k in ov if not k.startswith("_") and k not in {"device", "match", "time", "memory", "stability"}]
        if bad:
            raise ThresholdsError(f"{path}: overrides[{i}] has unknown key(s) {bad}")
        # Validate now, so a typo fails at load time and not only when a benchmark matches.
        for section, limits in (("time", TimeLimits()), ("memory", MemoryLimits()), ("stability", StabilityLimits())):
            _merge(limits, ov.get(section), f"{path}: overrides[{i}].{section}")
    return dataclasses.replace(
        base,
        time=_merge(base.time, doc.get("time"), f"{path}: time"),
        memory=_merge(base.memory, doc.get("memory"), f"{path}: memory"),
        nll=_merge(base.nll, doc.get("nll"), f"{path}: nll"),
        stability=_merge(base.stability, doc.get("stability"), f"{path}: stability"),
        gate_missing=missing.get("gate", True),
        overrides=tuple(overrides),
    )
