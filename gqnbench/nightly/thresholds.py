"""Per-metric regression limits, loaded from one JSON file (``ci/thresholds.json``).

JSON rather than TOML so Python 3.10 needs no extra package. Layout::

    {"ratio":     {"max_slowdown_pct": 10},            # ratio to the reference up by more -> regression
     "memory":    {"max_increase_pct": 10, "min_increase_bytes": 262144},
     "nll":       {"abs_tol_nats": 0.5, "rel_tol_of_excess": 0.05, "bands": {"val_nll/<model>/<preset>": [lo, hi]}},
     "stability": {"max_iqr_over_median": 0.1, "max_stddev_over_mean": 0.2, "min_rounds": 3},
     "busy":      {"max_load_per_core": 1.25},
     "missing":   {"gate": true},
     "overrides": [{"device": "cpu-*", "match": "*compiled*", "ratio": {...}, "memory": {...},
                    "stability": {...}}]}

Timings are judged as ratios (a benchmark's time over the reference matmul's in the same
rounds); absolute times are shown, never judged, so the ``ratio`` section holds the timing limits.

Keys starting with "_" are comments. ``overrides`` apply in order to benchmarks whose metric
key or group matches the ``match`` glob (default all) on devices matching the ``device`` glob
(default all); later entries win. Each section is a pydantic model that refuses unknown keys,
so a typo fails at load time naming the file and the key.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Strict: a JSON true or "10" is a typo, not a number.
Limit = Annotated[float, Field(ge=0, strict=True)]


class ThresholdsError(ValueError):
    """The thresholds file is unreadable or names an unknown setting."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RatioLimits(_Section):
    max_slowdown_pct: Limit = 10.0  # gate: current ratio > baseline ratio * (1 + pct/100)
    report_speedup_pct: Limit = 10.0  # not a gate: say "improved" so the baseline can be refreshed


class MemoryLimits(_Section):
    max_increase_pct: Limit = 10.0
    # An increase must also exceed this many bytes: allocator rounding and per-thread buffers are not a regression.
    min_increase_bytes: Limit = 256 * 1024


class NLLLimits(_Section):
    # Band = baseline +- max(abs_tol_nats, rel_tol_of_excess * (baseline NLL - NLL constant)).
    # The constant (0.5*ln(2*pi) per pixel value) dominates the NLL, so a tolerance relative
    # to the whole NLL would hide any change in what the model learned.
    abs_tol_nats: Limit = 0.5
    rel_tol_of_excess: Limit = 0.05
    bands: dict[str, tuple[float, float]] = {}  # explicit [lo, hi] per val_nll metric key


class StabilityLimits(_Section):
    max_iqr_over_median: Limit = 0.10
    max_stddev_over_mean: Limit = 0.20
    min_rounds: Annotated[int, Field(ge=0)] = 3


class BusyLimits(_Section):
    # Busy: more tasks want to run than there are cores (a quarter more, for the sampling's noise).
    # The run's own threads count, so a quiet host running it shows at most about 1 per core.
    max_load_per_core: Limit = 1.25


class MissingLimits(_Section):
    gate: Annotated[bool, Field(strict=True)] = True


OVERRIDABLE = ("ratio", "memory", "stability")


class Override(_Section):
    device: str = "*"
    match: str = "*"
    ratio: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    stability: dict[str, Any] = {}


class Thresholds(_Section):
    ratio: RatioLimits = RatioLimits()
    memory: MemoryLimits = MemoryLimits()
    nll: NLLLimits = NLLLimits()
    stability: StabilityLimits = StabilityLimits()
    busy: BusyLimits = BusyLimits()
    missing: MissingLimits = MissingLimits()
    overrides: tuple[Override, ...] = ()
    source: str = Field(default="<defaults>", exclude=True)

    @property
    def gate_missing(self) -> bool:
        return self.missing.gate

    def for_benchmark(self, key: str, group: str | None, device_name: str | None) -> Thresholds:
        """These limits with every matching override applied (later overrides win)."""
        out = self
        names = (key, key.removeprefix("bench/"), group or "")
        for ov in self.overrides:
            if fnmatch.fnmatchcase(device_name or "", ov.device) and any(
                fnmatch.fnmatchcase(name, ov.match) for name in names if name
            ):
                out = out.model_copy(
                    update={
                        section: getattr(out, section).model_copy(update=getattr(ov, section))
                        for section in OVERRIDABLE
                    }
                )
        return out

    def nll_band(self, key: str, baseline_nll: float, nll_constant: float | None) -> tuple[float, float]:
        """The accepted [lo, hi] validation NLL (nats per image) for the metric ``key``."""
        if key in self.nll.bands:
            lo, hi = self.nll.bands[key]
            return float(lo), float(hi)
        excess = abs(baseline_nll - nll_constant) if nll_constant is not None else abs(baseline_nll)
        tol = max(self.nll.abs_tol_nats, self.nll.rel_tol_of_excess * excess)
        return baseline_nll - tol, baseline_nll + tol

    def is_busy(self, load: float | None, cpus: int | None) -> bool:
        """Whether a measurement under this ``load`` (runnable tasks) on ``cpus`` CPUs is too disturbed to judge."""
        return load is not None and bool(cpus) and load > self.busy.max_load_per_core * cpus

    def describe(self) -> str:
        return (
            f"timing: ratio to the reference > +{self.ratio.max_slowdown_pct:g}% | "
            f"memory: peak > +{self.memory.max_increase_pct:g}% (and > {self.memory.min_increase_bytes / 2**20:g} MiB) | "
            f"NLL: outside baseline +- max({self.nll.abs_tol_nats:g} nats, "
            f"{self.nll.rel_tol_of_excess * 100:g}% of NLL above constant) | "
            f"unstable: IQR/median > {self.stability.max_iqr_over_median:g} or stddev/mean > "
            f"{self.stability.max_stddev_over_mean:g} or rounds < {self.stability.min_rounds} | "
            f"busy: load > {self.busy.max_load_per_core:g} x CPUs"
            + "".join(f" | override {_describe_override(ov)}" for ov in self.overrides)
        )


def _describe_override(ov: Override) -> str:
    changes = [f"{section}.{name}={value:g}" for section in OVERRIDABLE for name, value in getattr(ov, section).items()]
    return f"[device {ov.device}, match {ov.match}]: {', '.join(changes) or 'no changes'}"


def _without_comments(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _without_comments(v) for k, v in doc.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(doc, list):
        return [_without_comments(v) for v in doc]
    return doc


def _messages(exc: ValidationError, prefix: str) -> str:
    out = []
    for error in exc.errors()[:5]:
        where = ".".join([prefix, *map(str, error["loc"])]).strip(".")
        if error["type"] == "extra_forbidden":
            parent, _, name = where.rpartition(".")
            out.append(f"{parent or 'top level'}: unknown setting {name!r}")
        else:
            out.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(out)


def load_thresholds(path: str | Path | None) -> Thresholds:
    """Read a thresholds file; ``None`` gives the built-in defaults. Unknown keys are errors."""
    if path is None:
        return Thresholds()
    path = Path(path)
    try:
        doc = _without_comments(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ThresholdsError(f"{path}: thresholds file not found") from exc
    except json.JSONDecodeError as exc:
        raise ThresholdsError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ThresholdsError(f"{path}: expected a JSON object at the top level")
    try:
        thresholds = Thresholds.model_validate({**doc, "source": str(path)})
    except ValidationError as exc:
        raise ThresholdsError(f"{path}: {_messages(exc, '')}") from None
    # Check each override against its section now, so a typo fails at load time and not only
    # when a benchmark matches.
    for i, ov in enumerate(thresholds.overrides):
        for section in OVERRIDABLE:
            limits = getattr(thresholds, section)
            try:
                type(limits).model_validate({**limits.model_dump(), **getattr(ov, section)})
            except ValidationError as exc:
                raise ThresholdsError(f"{path}: {_messages(exc, f'overrides[{i}].{section}')}") from None
    return thresholds
