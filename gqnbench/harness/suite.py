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
     "numerics":    [row, ...]             gqnbench.harness.numerics
     "scaling":     [row, ...]             gqnbench.harness.scaling
     "timings_s":   {section: wall seconds}}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from gqnbench.harness.common import resolve_device
from gqnbench.presets import get_preset
from gqnbench.results import ResultsError, capture_environment, read_result, write_result

SECTIONS = ("params", "flops", "reference", "matmul_peak", "throughput", "memory", "numerics", "scaling")


def _plan(
    preset: str, models: Sequence[str], quick: bool, device: str, overrides: Mapping[str, object] | None = None
) -> dict[str, Callable[[dict, Callable], object]]:
    """Section name -> function(doc so far, progress callback) returning the section's value."""
    from gqnbench.harness.flops import flop_report
    from gqnbench.harness.memory import memory_report
    from gqnbench.harness.numerics import check_numerics
    from gqnbench.harness.params import parameter_report
    from gqnbench.harness.scaling import default_axes, measure_scaling
    from gqnbench.harness.throughput import matmul_peak, throughput_matrix

    cuda = resolve_device(device).type == "cuda"
    # The step-building harnesses take the preset by name plus override pairs; the others the resolved preset.
    pairs = tuple((overrides or {}).items())
    resolved = get_preset(preset, overrides)
    dtypes = ("fp32", "bf16", "fp16") if cuda else ("fp32", "bf16")

    def params(doc, note):
        return {m: parameter_report(m, resolved) for m in models}

    def flops(doc, note):
        return {m: flop_report(m, resolved) for m in models}

    def reference(doc, note):
        # The study's own sizes, whatever preset was measured: counting costs no compute (meta device).
        # A plugin model without a config at the paper preset is left out.
        paper = [m for m in models if m in get_preset("paper").models]
        return {
            "preset": "paper",
            "params": {m: parameter_report(m, "paper") for m in paper},
            "flops": {m: flop_report(m, "paper", fvcore=not quick) for m in paper},
        }

    def peak(doc, note):
        return matmul_peak(device, dtypes, n=2048 if quick else 4096, rounds=3 if quick else 5)

    def throughput(doc, note):
        if quick:
            rows = throughput_matrix(
                models, preset, modes=("train",), dtypes=("fp32", "bf16"), compiled=(False,), device=device,
                rounds=3, warmup=1, peaks=doc.get("matmul_peak"), progress=note, overrides=pairs,
            )  # fmt: skip
            rows += throughput_matrix(
                models, preset, modes=("infer",), dtypes=("fp32",), compiled=(False,), device=device,
                rounds=3, warmup=1, peaks=doc.get("matmul_peak"), progress=note, overrides=pairs,
            )  # fmt: skip
            return rows
        return throughput_matrix(
            models, preset, modes=("train", "infer"), dtypes=dtypes, compiled=(False, True), device=device,
            rounds=5, warmup=2, peaks=doc.get("matmul_peak"), progress=note, overrides=pairs,
        )  # fmt: skip

    def memory(doc, note):
        out = {}
        for m in models:
            note(f"{m} memory")
            out[m] = memory_report(
                m, preset, device=device, modes=("train",) if quick else ("train", "infer"), overrides=pairs
            )
        return out

    def numerics(doc, note):
        rows = []
        cases = [("bf16", False)] if quick else [(d, False) for d in dtypes if d != "fp32"] + [("fp32", True)]
        for m in models:
            for dtype, compiled in cases:
                note(f"{m} {dtype}{' compiled' if compiled else ''}")
                rows.append(check_numerics(m, resolved, dtype, compiled=compiled, batch=4, device=device).as_dict())
        return rows

    def scaling(doc, note):
        return measure_scaling(
            models,
            preset,
            default_axes(resolved, quick=quick),
            device=device,
            rounds=2 if quick else 3,
            progress=note,
            overrides=pairs,
        )

    return {
        "params": params,
        "flops": flops,
        "reference": reference,
        "matmul_peak": peak,
        "throughput": throughput,
        "memory": memory,
        "numerics": numerics,
        "scaling": scaling,
    }


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
    wanted = list(sections) if sections is not None else list(SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown costs section(s) {unknown}; sections: {', '.join(SECTIONS)}")
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
        try:
            old = read_result(out_path, "costs")
        except ResultsError:
            old = None
        # A file made before overrides were recorded had none.
        same = ("preset", "device", "quick", "models")
        if old and all(old.get(k) == doc[k] for k in same) and old.get("overrides", {}) == overrides:
            doc.update({k: v for k, v in old.items() if k in SECTIONS or k == "timings_s"})
    plan = _plan(preset, models, quick, dev, overrides)
    environment = capture_environment(device=dev)
    todo = [s for s in wanted if s not in doc]
    bar = tqdm(todo, desc=f"costs {preset}", unit="section", disable=not show_progress)
    for section in bar:
        bar.set_postfix_str(section)
        start = time.perf_counter()
        doc[section] = plan[section](doc, lambda text, s=section: bar.set_postfix_str(f"{s}: {text}"))
        doc["timings_s"][section] = time.perf_counter() - start
        write_result(out_path, "costs", doc, environment=environment)
    if not todo:
        write_result(out_path, "costs", doc, environment=environment)
    return out_path
