"""How step time and peak memory grow with work: L, image size, batch and the number of context views M.

Each axis varies one knob of a preset and keeps the rest; every point is one training
step (forward, backward, Adam). On CPU a point runs in its own fresh process, which
measures the step's peak of tensor bytes from the allocator first (its peak RSS beside it)
and then times ``rounds`` more steps, so one point never inherits another's memory
high-water mark. On CUDA the point runs in-process with the allocator's peak reset in between.

``costs.json`` field::

    scaling = [{"model", "axis" ("L"|"image_size"|"batch"|"M"), "value", "step_s", "step_iqr_s",
                "peak_memory_bytes", "peak_rss_bytes" (CPU), "flop_per_step", "images_per_s", "preset", "dtype", "batch", "device"}]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from gqnbench.harness.common import StepSpec, as_preset, resolve_device, time_calls
from gqnbench.harness.flops import step_flops

AXES = ("L", "image_size", "batch", "M")


def default_axes(preset: str, quick: bool = False) -> dict[str, list[int]]:
    """Values per axis around the preset's own setting (doubling steps, so growth reads as a slope)."""
    p = as_preset(preset)
    cfg = p.model_config("gqn")
    layers, size, batch = cfg.num_layers, cfg.image_size, p.train.batch_size
    if quick:
        return {"L": [max(1, layers // 2), layers]}
    return {
        "L": sorted({max(1, layers // 4), max(1, layers // 2), layers, layers * 2}),
        "image_size": sorted({max(8, size // 2), size, size * 2}),
        "batch": sorted({max(1, batch // 4), max(1, batch // 2), batch, batch * 2}),
        "M": [1, 3, 7, 14],
    }


def _spec_for(
    model: str,
    preset: str,
    axis: str,
    value: int,
    dtype: str,
    device: str,
    batch: int | None,
    base: tuple[tuple[str, object], ...] = (),
) -> StepSpec:
    # The axis's own override comes after the user's (``base``), so it wins on the same field.
    overrides: tuple = base
    num_context = 3
    if axis == "L":
        overrides = (*base, ("model.num_layers", int(value)))
    elif axis == "image_size":
        overrides = (*base, ("model.image_size", int(value)))
    elif axis == "batch":
        batch = int(value)
    elif axis == "M":
        num_context = int(value)
    else:
        raise ValueError(f"unknown scaling axis {axis!r}; axes: {', '.join(AXES)}")
    return StepSpec(
        model,
        preset,
        mode="train",
        batch=batch,
        dtype=dtype,
        device=device,
        num_context=num_context,
        overrides=overrides,
    )


def scaling_point(spec: StepSpec, rounds: int = 3) -> dict:
    """Step time (median of ``rounds``) and peak memory of one training step for ``spec``."""
    device = resolve_device(spec.device)
    if device.type == "cuda":
        import torch

        from gqnbench.harness.common import prepare_step

        step = prepare_step(spec)
        step.run()
        torch.cuda.reset_peak_memory_stats(device)
        timing = time_calls(step.run, device, rounds=rounds, warmup=0)
        return {
            "step_s": timing.median_s,
            "step_iqr_s": timing.iqr_s,
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
        }
    from gqnbench.harness.memory import measure_cpu_step_fresh_process

    result = measure_cpu_step_fresh_process(spec, warmup=1, timing_rounds=rounds)
    return {
        "step_s": result["step_s"],
        "step_iqr_s": result["step_iqr_s"],
        "peak_memory_bytes": result["peak_allocated_bytes"],
        "peak_rss_bytes": result["peak_rss_bytes"],
    }


def measure_scaling(
    models: Iterable[str],
    preset: str,
    axes: Mapping[str, Sequence[int]] | None = None,
    dtype: str = "fp32",
    device: str = "cpu",
    batch: int | None = None,
    rounds: int = 3,
    progress: Callable[[str], None] | None = None,
    overrides: Sequence[tuple[str, object]] = (),
) -> list[dict]:
    """Rows for every model x axis x value (see the module docstring); ``overrides`` apply to every point."""
    overrides = tuple(overrides)
    axes = dict(axes) if axes is not None else default_axes(preset)
    rows = []
    for model in models:
        for axis, values in axes.items():
            for value in values:
                spec = _spec_for(model, preset, axis, value, dtype, device, batch, overrides)
                if progress is not None:
                    progress(f"{model} {axis}={value}")
                point = scaling_point(spec, rounds)
                flop = step_flops(
                    model, spec.resolved_preset(), "train", spec.resolved_batch(), spec.num_context, spec.num_queries
                )
                rows.append(
                    {
                        "model": model,
                        "axis": axis,
                        "value": value,
                        **point,
                        "flop_per_step": flop,
                        "images_per_s": spec.resolved_batch() * spec.num_queries / point["step_s"],
                        "preset": preset,
                        "dtype": dtype,
                        "batch": spec.resolved_batch(),
                        "num_context": spec.num_context,
                        "device": device,
                    }
                )
    return rows
