"""``measure_costs``: every cost harness in one pass, written to one ``costs`` results file.

Sections run in a fixed order (params, flops, reference, matmul_peak, throughput, memory,
numerics, scaling); the file is rewritten atomically after each, so an interrupted run
keeps what it finished, and a re-run with ``resume=True`` skips the sections already in
the file (when it was made with the same preset, device and quick flag). ``quick`` is
the subset the main job's ``--quick`` mode can afford (about a minute at the ``cpu``
preset on 2 cores on a quiet machine): eager only, fewer rounds, a 2048^2 matmul, the
training step's memory only, two scaling points (L) per model.

File layout (``kind = "costs"``; each field is documented in the module that makes it)::

    {"preset", "overrides" ({"section.field": value} from --set), "device", "quick", "models",
     "params":      {model: ...}           gqnbench.harness.params   (metagqn in the authors' layout)
     "flops":       {model: ...}           gqnbench.harness.flops    (per scene, 3 context views)
     "reference":   {"preset": "paper", "params": {model: ...}, "flops": {model: ...}}
     "matmul_peak": {...}                  gqnbench.harness.throughput
     "throughput":  [row, ...]             gqnbench.harness.throughput
     "memory":      {model: {"train": row, "infer": row}}   gqnbench.harness.memory
     "numerics":    [row, ...]             gqnbench.numerics
     "scaling":     [row, ...]             gqnbench.harness.scaling
     "timings_s":   {section: wall seconds}}
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from gqnbench.environment import capture_environment
from gqnbench.harness.common import resolve_device
from gqnbench.presets import Preset, get_preset
from gqnbench.results import ResultsError, read_result, write_result

SECTIONS = ("params", "flops", "reference", "matmul_peak", "throughput", "memory", "numerics", "scaling")


@dataclass(frozen=True)
class Budget:
    """How much each section measures: the full matrix, or the subset ``quick`` can afford."""

    peak_n: int  # the matmul-peak size
    peak_rounds: int
    throughput: tuple[dict[str, Any], ...]  # one throughput_matrix pass each: modes, dtypes, compiled, rounds, warmup
    memory_modes: tuple[str, ...]
    numerics: tuple[tuple[str, bool], ...]  # (dtype, compiled) checked against fp64
    scaling_rounds: int
    fvcore: bool  # the reference FLOPs cross-checked with fvcore


def budget(quick: bool, dtypes: Sequence[str]) -> Budget:
    """The measurement budget; ``dtypes`` are the step precisions the device runs (fp16 only on CUDA)."""
    if quick:
        # Eager only: a compile costs more than the whole quick run.
        return Budget(
            peak_n=2048,
            peak_rounds=3,
            throughput=(
                {"modes": ("train",), "dtypes": ("fp32", "bf16"), "compiled": (False,), "rounds": 3, "warmup": 1},
                {"modes": ("infer",), "dtypes": ("fp32",), "compiled": (False,), "rounds": 3, "warmup": 1},
            ),
            memory_modes=("train",),
            numerics=(("bf16", False),),
            scaling_rounds=2,
            fvcore=False,
        )
    full = {"modes": ("train", "infer"), "dtypes": tuple(dtypes), "compiled": (False, True), "rounds": 5, "warmup": 2}
    return Budget(
        peak_n=4096,
        peak_rounds=5,
        throughput=(full,),
        memory_modes=("train", "infer"),
        # Every low precision eager, and fp32 compiled: compile's own error against eager fp32.
        numerics=tuple((d, False) for d in dtypes if d != "fp32") + (("fp32", True),),
        scaling_rounds=3,
        fvcore=True,
    )


@dataclass(frozen=True)
class CostsRun:
    """What every section of one costs run reads."""

    preset: str
    models: Sequence[str]
    device: str
    # The step-building harnesses take the preset by name plus override pairs; the others the resolved preset.
    pairs: tuple[tuple[str, object], ...]
    resolved: Preset
    quick: bool
    dtypes: tuple[str, ...]
    budget: Budget


def _params(run: CostsRun, doc: dict, note: Callable) -> object:
    from gqnbench.harness.params import parameter_report

    return {m: parameter_report(m, run.resolved) for m in run.models}


def _flops(run: CostsRun, doc: dict, note: Callable) -> object:
    from gqnbench.harness.flops import flop_report

    return {m: flop_report(m, run.resolved) for m in run.models}


def _reference(run: CostsRun, doc: dict, note: Callable) -> object:
    from gqnbench.harness.flops import flop_report
    from gqnbench.harness.params import parameter_report

    # The study's own sizes, whatever preset was measured: counting costs no compute (meta device).
    # A plugin model without a config at the paper preset is left out.
    paper = [m for m in run.models if m in get_preset("paper").models]
    return {
        "preset": "paper",
        "params": {m: parameter_report(m, "paper") for m in paper},
        "flops": {m: flop_report(m, "paper", fvcore=run.budget.fvcore) for m in paper},
    }


def _peak(run: CostsRun, doc: dict, note: Callable) -> object:
    from gqnbench.harness.throughput import matmul_peak

    return matmul_peak(run.device, run.dtypes, n=run.budget.peak_n, rounds=run.budget.peak_rounds)


def _throughput(run: CostsRun, doc: dict, note: Callable) -> object:
    from gqnbench.harness.throughput import throughput_matrix

    rows = []
    for cases in run.budget.throughput:
        rows += throughput_matrix(
            run.models, run.preset, device=run.device, peaks=doc.get("matmul_peak"), progress=note,
            overrides=run.pairs, **cases,
        )  # fmt: skip
    return rows


def _memory(run: CostsRun, doc: dict, note: Callable) -> object:
    from gqnbench.harness.memory import memory_report

    out = {}
    for m in run.models:
        note(f"{m} memory")
        out[m] = memory_report(m, run.preset, device=run.device, modes=run.budget.memory_modes, overrides=run.pairs)
    return out


def _numerics(run: CostsRun, doc: dict, note: Callable) -> object:
    from gqnbench.numerics import check_numerics

    rows = []
    for m in run.models:
        for dtype, compiled in run.budget.numerics:
            note(f"{m} {dtype}{' compiled' if compiled else ''}")
            rows.append(check_numerics(m, run.resolved, dtype, compiled=compiled, batch=4, device=run.device).as_dict())
    return rows


def _scaling(run: CostsRun, doc: dict, note: Callable) -> object:
    from gqnbench.harness.scaling import default_axes, measure_scaling

    return measure_scaling(
        run.models,
        run.preset,
        default_axes(run.resolved, quick=run.quick),
        device=run.device,
        rounds=run.budget.scaling_rounds,
        progress=note,
        overrides=run.pairs,
    )


_SECTION_FNS = {
    "params": _params,
    "flops": _flops,
    "reference": _reference,
    "matmul_peak": _peak,
    "throughput": _throughput,
    "memory": _memory,
    "numerics": _numerics,
    "scaling": _scaling,
}


def _plan(
    preset: str, models: Sequence[str], quick: bool, device: str, overrides: Mapping[str, object] | None = None
) -> dict[str, Callable[[dict, Callable], object]]:
    """Section name -> function(doc so far, progress callback) returning the section's value."""
    cuda = resolve_device(device).type == "cuda"
    dtypes = ("fp32", "bf16", "fp16") if cuda else ("fp32", "bf16")
    run = CostsRun(
        preset=preset,
        models=models,
        device=device,
        pairs=tuple((overrides or {}).items()),
        resolved=get_preset(preset, overrides),
        quick=quick,
        dtypes=dtypes,
        budget=budget(quick, dtypes),
    )
    return {name: functools.partial(_SECTION_FNS[name], run) for name in SECTIONS}


def measure_costs(
    preset: str = "cpu",
    models: Sequence[str] = ("gqn", "metagqn"),
    out_path: str | Path = "results/costs.json",
    quick: bool = False,
    device: str = "cpu",
    resume: bool = True,
    sections: Sequence[str] | None = None,
    show_progress: bool = True,
    overrides: Mapping[str, object] | None = None,
) -> Path:
    """Run the cost harnesses for ``models`` at ``preset`` and write the ``costs`` file; returns its path.

    ``overrides`` (``{"model.hidden_channels": 32}``, as ``--set`` gives them) apply to every section
    but ``reference`` (the study's own sizes) and are recorded in the file.
    """
    out_path = Path(out_path)
    dev = str(resolve_device(device))
    models = list(models)
    wanted = _wanted_sections(sections)
    overrides = dict(overrides or {})
    doc: dict = {
        "preset": preset,
        "overrides": overrides,
        "device": dev,
        "quick": quick,
        "models": models,
        "timings_s": {},
    }
    if resume and out_path.exists():
        doc.update(_resumable(out_path, doc))
    plan = _plan(preset, models, quick, dev, overrides)
    _run_sections(plan, [s for s in wanted if s not in doc], doc, out_path, show_progress)
    return out_path


def _wanted_sections(sections: Sequence[str] | None) -> list[str]:
    wanted = list(sections) if sections is not None else list(SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown costs section(s) {unknown}; sections: {', '.join(SECTIONS)}")
    return wanted


def _resumable(out_path: Path, doc: dict) -> dict:
    """The finished sections (and their timings) of the file at ``out_path`` if it was made for the same run."""
    try:
        old = read_result(out_path, "costs")
    except ResultsError:
        return {}
    # A file made before overrides were recorded had none.
    same = ("preset", "device", "quick", "models")
    if not (all(old.get(k) == doc[k] for k in same) and old.get("overrides", {}) == doc["overrides"]):
        return {}
    return {k: v for k, v in old.items() if k in SECTIONS or k == "timings_s"}


def _run_sections(
    plan: Mapping[str, Callable[[dict, Callable], object]],
    todo: list[str],
    doc: dict,
    out_path: Path,
    show_progress: bool,
) -> None:
    """Run ``todo`` in order, rewriting the file after each so an interrupted run keeps what it finished."""
    environment = capture_environment(device=doc["device"])
    bar = tqdm(todo, desc=f"costs {doc['preset']}", unit="section", disable=not show_progress)
    for section in bar:
        bar.set_postfix_str(section)
        start = time.perf_counter()
        doc[section] = plan[section](doc, lambda text, s=section: bar.set_postfix_str(f"{s}: {text}"))
        doc["timings_s"][section] = time.perf_counter() - start
        write_result(out_path, "costs", doc, environment=environment)
    if not todo:
        write_result(out_path, "costs", doc, environment=environment)
