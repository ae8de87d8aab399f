"""What every cost harness shares: device/dtype names, synchronised timing and the step under test.

A *step* is the unit every harness measures: ``train`` is forward + backward + optimizer
step on one batch, ``infer`` is ``model.predict`` of K query views per scene under
``no_grad``. :func:`prepare_step` builds the model and a synthetic batch and hands them to
:func:`gqnbench.step.build_step`, the builder the training loop uses too, so throughput,
memory, profiling and pytest-benchmark time exactly the step that trains (same optimizer,
precision, compile, fast path and flush-to-zero), and returns a zero-argument callable.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from gqnbench.data.episode import Episode
from gqnbench.models import GQNFamilyModel, ModelConfig, build_model
from gqnbench.presets import Preset, get_preset
from gqnbench.step import (
    PRECISION_DTYPES,
    FastPath,
    TrainStep,
    build_step,
    check_precision,
    resolve_device,
    step_numerics,
    synchronize,
)
from gqnbench.step import UnsupportedCase as UnsupportedCase  # re-exported: harness callers catch it from here

# Element types of the matmul peaks: the step precisions plus fp64, and on CUDA tf32 (fp32 operands
# that the tensor cores multiply as TF32, the arithmetic cuDNN uses for fp32 convolutions by default).
DTYPES: dict[str, torch.dtype] = {**PRECISION_DTYPES, "fp64": torch.float64, "tf32": torch.float32}
MODES = ("train", "infer")


def model_config(model: str, preset: Preset, authors_layout: bool = False) -> ModelConfig:
    """The preset's config for ``model``; ``authors_layout`` adds metagqn's unused prior head (the study's count)."""
    cfg = preset.model_config(model)
    if authors_layout and model == "metagqn":
        cfg = dataclasses.replace(cfg, include_unused_prior_head=True)
    return cfg


def as_preset(preset: str | Preset) -> Preset:
    return get_preset(preset) if isinstance(preset, str) else preset


def make_episode(
    cfg: ModelConfig,
    batch: int,
    num_context: int = 3,
    num_queries: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Episode:
    """A random batch of the model's image size (costs do not depend on pixel values)."""
    return Episode.random(
        batch, cfg.image_size, num_context, num_queries, generator=torch.Generator().manual_seed(seed), device=device
    )


@dataclass(frozen=True)
class StepSpec:
    """One cell of the throughput matrix."""

    model: str
    preset: str
    mode: str = "train"  # train | infer
    batch: int | None = None  # None: the preset's training batch
    dtype: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    compiled: bool = False
    channels_last: bool = False  # the fast path's channels_last switch (kept for its label)
    device: str = "cpu"
    num_context: int = 3
    num_queries: int = 1  # K query views per scene
    seed: int = 0
    compile_backend: str = "inductor"
    # Flush denormals to zero on CPU (FTZ/DAZ). Repeated steps on one batch drive values into the
    # denormal range, and x86 then runs ~20x slower (gqn at the cpu preset: 0.4 s -> 7.8 s a step
    # after three steps); a GPU does not pay this, so it would measure the hazard, not the model.
    flush_denormal: bool = True
    overrides: tuple[tuple[str, object], ...] = ()  # preset overrides, e.g. (("model.num_layers", 4),)
    # The step's fast path (gqnbench.step.FastPath spec): "off" times the plain step, "auto" the
    # device's default (everything on CUDA), or a list of switches ("auto,-cuda_graph").
    fast_path: str = "off"

    def resolved_preset(self) -> Preset:
        return get_preset(self.preset, dict(self.overrides) if self.overrides else None)

    def resolved_batch(self) -> int:
        return self.batch if self.batch is not None else self.resolved_preset().train.batch_size

    def fast(self) -> FastPath:
        """The fast path this spec's step runs with (``channels_last`` adds that switch)."""
        spec = self.fast_path + (",channels_last" if self.channels_last else "")
        cuda = self.device.startswith("cuda") or (self.device == "auto" and torch.cuda.is_available())
        return FastPath.parse(spec, torch.device("cuda" if cuda else "cpu"), self.compiled)

    def label(self) -> str:
        flags = [self.dtype, "compiled" if self.compiled else "eager"]
        fast = self.fast()
        if fast == FastPath(channels_last=True):
            flags.append("channels_last")  # the name this case has always had
        elif fast != FastPath():
            flags.append(f"fast={fast.short()}")
        if not self.flush_denormal:
            flags.append("denormals")
        # The authors' formulation gets a short name, read from the resolved config so "false",
        # "off" or False from --set all say the same.
        flags += [f"{key}={value}" for key, value in self.overrides if not key.endswith("fold_linear_ops")]
        if not self.resolved_preset().model_config(self.model).fold_linear_ops:
            flags.append("unfolded")
        return f"{self.mode}-{self.model}-{self.preset}-b{self.resolved_batch()}-{'-'.join(flags)}"


@dataclass
class PreparedStep:
    """A ready-to-time step: call ``run()`` once per measured iteration; ``trainer`` is the step object."""

    spec: StepSpec
    device: torch.device
    model: GQNFamilyModel
    episode: Episode
    run: Callable[[], object]
    images_per_step: int
    optimizer: torch.optim.Optimizer | None = None
    info: dict = field(default_factory=dict)
    trainer: TrainStep | None = None


def prepare_step(spec: StepSpec) -> PreparedStep:
    """The model, a synthetic batch and the :func:`~gqnbench.step.build_step` step for ``spec``."""
    device = resolve_device(spec.device)
    check_precision(spec.dtype, device)
    if spec.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {spec.mode!r}")
    preset = spec.resolved_preset()
    model, episode = _model_and_batch(spec, preset, device)
    if spec.compiled:
        # A fresh dynamo cache per case: every model shares one forward's code object, so
        # without a reset the guards of earlier cases pile up and hit the recompile limit.
        torch._dynamo.reset()
    trainer = build_step(
        model,
        preset.train,
        device,
        precision=spec.dtype,
        compile=spec.compiled,
        compile_backend=spec.compile_backend,
        flush_denormal=spec.flush_denormal,
        fast_path=spec.fast(),
    )
    images = spec.resolved_batch() * spec.num_queries
    if spec.mode == "train":
        model.train()
        return PreparedStep(
            spec, device, model, episode, lambda: trainer.train_step(episode).loss, images, trainer.optimizer,
            trainer=trainer,
        )  # fmt: skip
    model.eval()
    return PreparedStep(spec, device, model, episode, lambda: trainer.predict(episode), images, trainer=trainer)


def _model_and_batch(spec: StepSpec, preset: Preset, device: torch.device) -> tuple[GQNFamilyModel, Episode]:
    """The seeded model and the synthetic batch, on ``device``."""
    cfg = model_config(spec.model, preset)
    # Built under the step's flush-to-zero mode: torch's worker threads, started by the first
    # parallel op (here), keep the mode they were started with.
    with step_numerics(device, spec.flush_denormal):
        torch.manual_seed(spec.seed)
        model = build_model(spec.model, cfg).to(device)
        episode = make_episode(cfg, spec.resolved_batch(), spec.num_context, spec.num_queries, spec.seed, device)
    return model, episode


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``rounds`` measured calls (after warm-up), with the spread."""

    times_s: tuple[float, ...]
    median_s: float
    q1_s: float
    q3_s: float
    mean_s: float
    min_s: float
    max_s: float

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    @property
    def rel_iqr(self) -> float:
        return self.iqr_s / self.median_s if self.median_s > 0 else float("nan")

    def fields(self, *names: str) -> dict[str, Any]:
        """The named statistics for a results file, in the order given (``times_s`` as a list, ``rounds`` its length)."""
        extra = {"times_s": list(self.times_s), "rounds": len(self.times_s)}
        return {name: extra[name] if name in extra else getattr(self, name) for name in names}

    @classmethod
    def from_times(cls, times: list[float]) -> Timing:
        if not times:
            raise ValueError("no timings to summarise")
        ordered = sorted(times)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(
            times_s=tuple(times),
            median_s=statistics.median(ordered),
            q1_s=q1,
            q3_s=q3,
            mean_s=statistics.fmean(ordered),
            min_s=ordered[0],
            max_s=ordered[-1],
        )


def time_calls(
    fn: Callable[[], object],
    device: torch.device,
    rounds: int,
    warmup: int = 1,
    on_round: Callable[[int, float], None] | None = None,
) -> Timing:
    """Median and spread of ``fn``: warm-up calls first, the device synchronised around every clock read."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        fn()
        synchronize(device)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        if on_round is not None:
            on_round(i, elapsed)
    return Timing.from_times(times)


def _graph_pool_ranges(device: torch.device) -> tuple[list[tuple[int, int]], int]:
    """Address ranges and total bytes of the allocator's private pools on ``device`` (CUDA graphs keep their memory there)."""
    ranges = []
    for seg in torch.cuda.memory_snapshot():
        if seg.get("device") != (device.index or 0) or tuple(seg.get("segment_pool_id") or (0, 0)) == (0, 0):
            continue
        ranges.append((int(seg["address"]), int(seg["address"]) + int(seg["total_size"])))
    return ranges, sum(end - start for start, end in ranges)


def _held_bytes(step: PreparedStep, outside: list[tuple[int, int]]) -> int:
    """Bytes of the tensors ``step`` holds between calls (parameters, gradients, optimizer state, the batch),
    each storage once, leaving out storage inside ``outside`` (a graph pool, counted whole)."""
    tensors = list(step.model.parameters()) + [p.grad for p in step.model.parameters() if p.grad is not None]
    if step.optimizer is not None:
        tensors += [t for state in step.optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    tensors += [t for t in vars(step.episode).values() if torch.is_tensor(t)]
    seen: dict[int, int] = {}
    for t in tensors:
        if t.device.type != "cuda":
            continue
        ptr = t.untyped_storage().data_ptr()
        if not any(start <= ptr < end for start, end in outside):
            seen[ptr] = t.untyped_storage().nbytes()
    return sum(seen.values())


def cuda_step_memory(step: PreparedStep) -> dict[str, Any]:
    """GPU memory of one more call of ``step``: its own peak, the allocator's, and the device's (NVML).

    ``peak_memory_bytes`` = what the step holds between calls (parameters, gradients, optimizer
    state, batch) + the most it allocated beyond that during the call + its CUDA graphs' private
    pools (a replayed graph reuses memory reserved at capture, which the allocator no longer counts
    as allocated). Built that way it does not depend on what else the process holds, so cases
    measured side by side in one process each get their own. ``allocator_peak_bytes`` and
    ``allocator_reserved_peak_bytes`` are the process's own peaks over the call;
    ``nvml_used_bytes`` is the device memory in use (all processes) after it, null without NVML.
    """
    from gqnbench.harness.memory import nvml_snapshot

    device = step.device
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step.run()
    synchronize(device)
    extra = max(0, torch.cuda.max_memory_allocated(device) - before)
    pools, pool_bytes = _graph_pool_ranges(device)
    nvml = nvml_snapshot(device.index or 0)
    return {
        "peak_memory_bytes": _held_bytes(step, pools) + extra + pool_bytes,
        "graph_pool_bytes": pool_bytes,
        "allocator_peak_bytes": int(torch.cuda.max_memory_allocated(device)),
        "allocator_reserved_peak_bytes": int(torch.cuda.max_memory_reserved(device)),
        "nvml_used_bytes": None if nvml is None else nvml.get("memory_used_bytes"),
    }


def timer_overhead_s(device: torch.device, rounds: int = 2000) -> float:
    """Median seconds the timing loop itself adds per call (an empty call through :func:`time_calls`)."""
    return time_calls(lambda: None, device, rounds=rounds, warmup=10).median_s

