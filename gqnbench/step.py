"""The one training step: every step gqnbench times or trains is built here (TorchBench style).

:func:`build_step` turns a model, a :class:`~gqnbench.training.config.TrainConfig` and a
device into a :class:`TrainStep`: the loss objective (optionally wrapped for DDP and
``torch.compile``), plain Adam from the config's lr/betas/eps, autocast for the precision,
a grad scaler (enabled for fp16 only), the config's gradient clipping and learning-rate
schedule, and the CPU flush-to-zero setting applied in a scope around each call. The
training loop and every cost harness (throughput, memory, profile, perf-targets, numerics,
pytest-benchmark) use it, so the step that is timed is the step that trains.

One precision vocabulary: ``fp32 | bf16 | fp16`` (:data:`PRECISIONS`); :func:`parse_precision`
also reads the legacy ``off`` (= fp32) that ``train.amp`` has always used, so old presets,
results and checkpoints keep working. bf16 and fp16 run the forward under autocast; fp16
needs CUDA (its grad scaler has no CPU use).

Flush-to-zero (x86 FTZ/DAZ): measured here (cpu preset, fp32, 2 threads) a metagqn step starts
at 0.32 s and slows to 0.7-3 s within 20 steps, because saturated sigmoid/tanh gates send
denormal numbers through backward and x86 cores take a slow path on every denormal operand;
with flush-to-zero the step stays at 0.32 s, and training is unaffected (denormals are below
1.2e-38). The mode is per thread, and OpenMP worker threads copy it from the thread that
starts them, so it reaches every intra-op thread only if it is set before the first parallel
torch op of the process: :func:`flush_denormals_for_process` does that (the training CLI and
worker processes call it first thing). :func:`flush_denormals` is the scope every step runs
in: it sets the calling thread's mode and restores the previous one after, so nothing leaks.

Layering: a top-level leaf module like ``metrics``; it imports torch and the data/model
interfaces only, so both ``gqnbench.harness`` and ``gqnbench.training`` may use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

import torch
from torch import nn

from gqnbench.data.episode import Episode
from gqnbench.models.config import linear_anneal

if TYPE_CHECKING:
    from gqnbench.training.config import TrainConfig

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")
PRECISION_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# How a training_run results file names the precision (kept as the files have always said it).
PRECISION_LABELS: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16-autocast", "fp16": "float16-autocast"}
_LEGACY = {"off": "fp32"}  # train.amp=off predates the shared vocabulary

# A phase label for profiling: called with "forward", "backward" or "optimizer", returns the
# context the step runs that phase in (see gqnbench.harness.profile).
PhaseLabel = Callable[[str], contextlib.AbstractContextManager]


class UnsupportedCase(ValueError):
    """A step that cannot run here (fp16 without CUDA, CUDA without a GPU)."""


def parse_precision(value: str) -> Precision:
    """``fp32``, ``bf16`` or ``fp16`` (``off`` reads as fp32); anything else is a ValueError naming the choices."""
    name = _LEGACY.get(str(value), str(value))
    if name not in PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or fp16 (or off, meaning fp32), got {value!r}")
    return cast(Precision, name)


def check_precision(value: str, device: torch.device) -> Precision:
    """:func:`parse_precision`, and fp16 only on CUDA (its grad scaler and kernels have no CPU use)."""
    precision = parse_precision(value)
    if precision == "fp16" and device.type != "cuda":
        raise UnsupportedCase("fp16 needs a CUDA device (autocast with a grad scaler); use bf16 on the CPU")
    return precision


def precision_label(value: str) -> str:
    """The name a training_run file gives the precision: float32, bfloat16-autocast or float16-autocast."""
    return PRECISION_LABELS[parse_precision(value)]


def resolve_device(preference: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (the GPU if there is one).

    With ``local_rank`` (training: one GPU per rank) a bare ``cuda`` becomes ``cuda:<local_rank>``
    and is made the current device. CUDA without a GPU, or another device type, is an
    :class:`UnsupportedCase`.
    """
    if str(preference) == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(preference)
    if device.type not in ("cpu", "cuda"):
        raise UnsupportedCase(f"device {str(preference)!r} is not supported (use cpu or cuda)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UnsupportedCase(f"device {str(preference)!r} asked for, but CUDA is not available")
        if local_rank is not None:
            if device.index is None:
                device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
            torch.cuda.set_device(device)
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for bf16/fp16; fp32 runs without it (an enabled fp32 autocast would still cast)."""
    name = parse_precision(precision)
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISION_DTYPES[name])


def flush_denormal_enabled() -> bool:
    """Whether the calling thread flushes denormals now (a one-element product that underflows)."""
    # torch has a setter but no getter; a 1-element op runs on the calling thread, never a worker.
    return (torch.tensor([1e-20]) * torch.tensor([1e-20])).item() == 0.0


def flush_denormals_for_process() -> bool:
    """Turn on flush-to-zero for this process; call before any torch op so worker threads inherit it."""
    return bool(torch.set_flush_denormal(True))


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """Flush-to-zero on (or off) on the calling thread for the block, and the previous mode back after."""
    previous = flush_denormal_enabled()
    if previous == enabled:
        yield
        return
    supported = torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(previous)


def step_numerics(device: torch.device, flush_denormal: bool) -> contextlib.AbstractContextManager:
    """The scope a step on ``device`` runs in: :func:`flush_denormals` on the CPU, nothing on CUDA."""
    return flush_denormals(flush_denormal) if device.type == "cpu" else contextlib.nullcontext()


def make_adam(params: Sequence[nn.Parameter] | Iterator[nn.Parameter], train: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the config's lr_start, betas and eps (torch's default foreach kernel, as training always used)."""
    return torch.optim.Adam(
        [p for p in params if p.requires_grad],
        lr=train.lr_start,
        betas=(train.adam_beta1, train.adam_beta2),
        eps=train.adam_eps,
    )


class LossObjective(nn.Module):
    """The model's loss and its parts as one forward, so DDP and torch.compile see one call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, episode: Episode, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model.loss(episode, step)
        return out.loss, out.reconstruction, out.kl


@dataclass
class LossTerms:
    """One forward's loss (what backward uses) and its two parts."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def _unlabelled(phase: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


@dataclass
class TrainStep:
    """Model, objective, optimizer, scaler and numerics of one training setup; build with :func:`build_step`.

    :meth:`train_step` is one update. The training loop uses its two halves,
    :meth:`forward_loss` and :meth:`update`, to check the loss in between (a NaN stops the run
    before it reaches the weights).
    """

    model: nn.Module
    objective: Callable[[Episode, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    predictor: Callable[..., torch.Tensor]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: Precision
    train: TrainConfig
    flush_denormal: bool = True

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)

    def numerics(self) -> contextlib.AbstractContextManager:
        """The CPU flush-to-zero scope every call of this step runs in (nothing on CUDA)."""
        return step_numerics(self.device, self.flush_denormal)

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step``: linear from lr_start to lr_end, then constant."""
        return linear_anneal(step, self.train.lr_start, self.train.lr_end, self.train.lr_anneal_steps)

    def forward_loss(self, episode: Episode, step: int = 0, label: PhaseLabel = _unlabelled) -> LossTerms:
        """Start update ``step``: drop the last gradients (before the forward, so they do not add to its peak), then the loss."""
        with self.numerics():
            with label("optimizer"):
                self.optimizer.zero_grad(set_to_none=True)
            with self.autocast(), label("forward"):
                loss, reconstruction, kl = self.objective(episode, step)
        return LossTerms(loss, reconstruction, kl)

    def update(self, loss: torch.Tensor, step: int = 0, label: PhaseLabel = _unlabelled) -> None:
        """Finish update ``step``: backward (scaled for fp16), optional clipping, Adam at the step's lr."""
        with self.numerics():
            with label("backward"):
                self.scaler.scale(loss).backward()
            with label("optimizer"):
                if self.train.grad_clip is not None:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train.grad_clip)
                lr = self.lr_at(step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.scaler.step(self.optimizer)
                self.scaler.update()

    def train_step(self, episode: Episode, step: int = 0, label: PhaseLabel = _unlabelled) -> LossTerms:
        """One whole update on ``episode`` (its loss terms are returned, computed before the update)."""
        terms = self.forward_loss(episode, step, label)
        self.update(terms.loss, step, label)
        return terms

    def predict(self, episode: Episode, use_mean: bool = False, label: PhaseLabel = _unlabelled) -> torch.Tensor:
        """The model's mean images for the query views, without gradients, in this step's precision."""
        with self.numerics(), torch.no_grad(), self.autocast(), label("forward"):
            return self.predictor(episode, use_mean=use_mean)


def build_step(
    model: nn.Module,
    train: TrainConfig,
    device: torch.device,
    *,
    precision: str | None = None,
    compile: bool | None = None,
    compile_backend: str = "inductor",
    flush_denormal: bool | None = None,
    distribute: Callable[[nn.Module], nn.Module] | None = None,
) -> TrainStep:
    """The step for ``model`` (already on ``device``) under ``train``; keywords override the config.

    ``precision`` defaults to ``train.amp``, ``compile`` to ``train.compile``,
    ``flush_denormal`` to ``train.flush_denormal``. ``distribute`` wraps the loss objective
    (the training loop passes DDP) before it is compiled.
    """
    name = check_precision(train.amp if precision is None else precision, device)
    objective: nn.Module = LossObjective(model)
    if distribute is not None:
        objective = distribute(objective)
    predictor = model.predict
    if train.compile if compile is None else compile:
        objective = torch.compile(objective, backend=compile_backend)
        predictor = torch.compile(model.predict, backend=compile_backend)
    return TrainStep(
        model=model,
        objective=objective,
        predictor=predictor,
        optimizer=make_adam(model.parameters(), train),
        scaler=torch.amp.GradScaler(device.type, enabled=name == "fp16"),
        device=device,
        precision=name,
        train=train,
        flush_denormal=train.flush_denormal if flush_denormal is None else flush_denormal,
    )
