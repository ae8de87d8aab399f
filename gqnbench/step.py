"""The one training step: every step gqnbench times or trains is built here (TorchBench style).

:func:`build_step` turns a model, a :class:`~gqnbench.config.TrainConfig` and a
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

The fast path (:class:`FastPath`, ``train.fast_path``): switches that change how the step runs,
never what it computes beyond rounding, each on its own so a device session can measure it alone.
``auto`` turns all of them on on CUDA and none on the CPU (the CPU step is bit-identical to the
step without a fast path):

- ``channels_last``: weights and images in NHWC, and the ConvLSTM states and canvas start in it
  (``models.layout``), so cuDNN's bf16 convolutions need no layout transposes;
- ``cudnn_benchmark``: cuDNN times its algorithms for each new shape, around the L-step core
  only (its shapes are fixed; the representation's change with the context views drawn);
- ``tf32``: TF32 for fp32 convolutions and matmuls, on or off explicitly (``None`` leaves
  torch's defaults, where cuDNN already runs fp32 convolutions as TF32); the step records what ran;
- ``fused_cell``: the ConvLSTM gate math of every cell (``models.convlstm.lstm_update``) compiled
  with ``torch.compile``, a region that builds in seconds;
- ``cuda_graph``: the L-step core and its loss (``model.core_loss``) captured once as CUDA graphs,
  forward and backward (``torch.cuda.make_graphed_callables``), and replayed every step: the core
  makes no host synchronisation, so it replays the same work. The representation, whose shapes
  change with the number of context views, runs eagerly around it;
- ``fused_adam``: Adam's fused kernel instead of the per-tensor loop.

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
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import nn

from gqnbench.config import linear_anneal
from gqnbench.data.episode import Episode
from gqnbench.models.base import GQNFamilyModel
from gqnbench.models.convlstm import ConvLSTMCell, lstm_update

if TYPE_CHECKING:
    from gqnbench.config import TrainConfig

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


def normalize_amp(value: str) -> str:
    """``train.amp`` in the shared vocabulary: a precision (:func:`parse_precision`), or ``auto`` (chosen per host)."""
    return "auto" if str(value) == "auto" else parse_precision(value)


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


def synchronize(device: torch.device) -> None:
    """Wait for queued device work; a clock read before this on CUDA measures only the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (None leaves them)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def autocast(device: torch.device, precision: str, cache: bool = True) -> contextlib.AbstractContextManager:
    """Autocast for bf16/fp16; fp32 runs without it (an enabled fp32 autocast would still cast).

    ``cache=False`` turns off autocast's cache of cast weights (a CUDA graph capture needs that).
    """
    name = parse_precision(precision)
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISION_DTYPES[name], cache_enabled=cache)


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


def make_adam(
    params: Sequence[nn.Parameter] | Iterator[nn.Parameter], train: TrainConfig, fused: bool = False
) -> torch.optim.Optimizer:
    """Adam with the config's lr_start, betas and eps (torch's default foreach kernel, as training always used;
    ``fused``: its single fused kernel)."""
    return torch.optim.Adam(
        [p for p in params if p.requires_grad],
        lr=train.lr_start,
        betas=(train.adam_beta1, train.adam_beta2),
        eps=train.adam_eps,
        **({"fused": True} if fused else {}),
    )


# --- the fast path ---------------------------------------------------------------------------------------------

FAST_SWITCHES = ("channels_last", "cudnn_benchmark", "tf32", "fused_cell", "cuda_graph", "fused_adam")
_SHORT = {
    "channels_last": "cl", "cudnn_benchmark": "bench", "tf32": "tf32",
    "fused_cell": "cell", "cuda_graph": "graph", "fused_adam": "adam",
}  # fmt: skip
_CUDA_ONLY = ("cuda_graph",)


@dataclass(frozen=True)
class FastPath:
    """Which fast-path switches a step runs with (see the module docstring); ``tf32`` None leaves torch's default.

    Written as a spec string in ``train.fast_path`` and on the command line: ``auto`` (everything
    on CUDA, nothing on the CPU), ``off``, or switch names, each optionally prefixed with ``-`` to
    turn it off, applied left to right: ``auto,-cuda_graph`` or ``channels_last,fused_cell``.
    """

    channels_last: bool = False
    cudnn_benchmark: bool = False
    tf32: bool | None = None
    fused_cell: bool = False
    cuda_graph: bool = False
    fused_adam: bool = False

    @classmethod
    def parse(cls, spec: str | FastPath, device: torch.device, compile: bool = False) -> FastPath:
        """The switches ``spec`` names on ``device``; a bad name is a ValueError listing the choices.

        ``compile`` (the whole step under ``torch.compile``) takes the place of the two switches
        that work on the model's code, so ``auto`` leaves ``fused_cell`` and ``cuda_graph`` off then.
        """
        if isinstance(spec, FastPath):
            return spec
        fast = cls()
        for token in (t.strip() for t in str(spec).split(",") if t.strip()):
            if token in ("auto", "off"):
                fast = cls.auto(device, compile) if token == "auto" else cls()
                continue
            name, on = (token[1:], False) if token.startswith("-") else (token, True)
            if name not in FAST_SWITCHES:
                raise ValueError(
                    f"fast path {spec!r}: unknown switch {name!r}; use auto, off or {', '.join(FAST_SWITCHES)} "
                    "(a leading '-' turns one off), comma-separated"
                )
            fast = dataclasses.replace(fast, **{name: on})
        for name in _CUDA_ONLY:
            if getattr(fast, name) and device.type != "cuda":
                raise UnsupportedCase(f"fast path switch {name} needs a CUDA device")
        if compile and (fast.fused_cell or fast.cuda_graph):
            raise UnsupportedCase(
                "the whole step is compiled: fused_cell and cuda_graph would work on code it replaces"
            )
        return fast

    @classmethod
    def auto(cls, device: torch.device, compile: bool = False) -> FastPath:
        """Every switch on CUDA (fused_cell and cuda_graph only when the whole step is not compiled); none on the CPU."""
        if device.type != "cuda":
            return cls()
        return cls(True, True, True, not compile, not compile, True)

    def spec(self) -> str:
        """The spec string that gives exactly these switches (``off`` for none)."""
        names = [name for name in FAST_SWITCHES if getattr(self, name)]
        if self.tf32 is False:
            names.append("-tf32")
        return ",".join(names) or "off"

    def short(self) -> str:
        """A compact name for labels: ``cl+bench+tf32+cell+graph+adam``; empty when off."""
        names = [_SHORT[name] for name in FAST_SWITCHES if getattr(self, name)]
        return "+".join(names) + ("+notf32" if self.tf32 is False else "")


@contextlib.contextmanager
def torch_flags(flags: dict[tuple[Any, str], Any]) -> Iterator[None]:
    """Set ``{(namespace, attribute): value}`` flags (``torch.backends.cudnn.benchmark`` ...) for the block; restore after."""
    old = {key: getattr(*key) for key in flags}
    try:
        for (namespace, attribute), value in flags.items():
            setattr(namespace, attribute, value)
        yield
    finally:
        for (namespace, attribute), value in old.items():
            setattr(namespace, attribute, value)


def tf32_flags(tf32: bool | None) -> dict[tuple[Any, str], Any]:
    """The torch flags for TF32 in fp32 convolutions and matmuls: both on, both off, or none (torch's defaults)."""
    if tf32 is None:
        return {}
    return {(torch.backends.cudnn, "allow_tf32"): tf32, (torch.backends.cuda.matmul, "allow_tf32"): tf32}


def tf32_in_use(device: torch.device, tf32: bool | None) -> dict[str, bool | None]:
    """Whether fp32 convolutions / matmuls run as TF32 under ``tf32`` on ``device`` (None on the CPU)."""
    if device.type != "cuda":
        return {"cudnn": None, "matmul": None}
    if tf32 is None:
        return {"cudnn": bool(torch.backends.cudnn.allow_tf32), "matmul": bool(torch.backends.cuda.matmul.allow_tf32)}
    return {"cudnn": tf32, "matmul": tf32}


def channels_last_images(images: torch.Tensor) -> torch.Tensor:
    """[..., C, H, W] images stored channels-last (a 5-D [B, K, C, H, W] stays so when its first two dims are flattened)."""
    return images.movedim(-3, -1).contiguous().movedim(-1, -3)


def _has_core_split(model: nn.Module) -> bool:
    """Whether ``model.loss`` is the two-part loss (representation, then core) that the CUDA graph replaces."""
    return (
        isinstance(model, GQNFamilyModel)
        and type(model).loss is GQNFamilyModel.loss
        and type(model).loss_inputs is not GQNFamilyModel.loss_inputs
    )


class _CoreLoss(nn.Module):
    """The model's core and loss as one module call, the unit ``make_graphed_callables`` captures.

    Its parameters (all of the model's; the representation's get no gradient here) are inputs of
    the graph; the loss parts come back detached, only the loss is differentiated.
    """

    def __init__(self, model: GQNFamilyModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        *core_inputs, sigma = inputs
        out = self.model.core_loss(*core_inputs, sigma=sigma)
        return out.loss, out.reconstruction.detach(), out.kl.detach()


class CoreRunner:
    """The L-step core of a step: under cuDNN's benchmark mode when asked, and as a CUDA graph when asked.

    The graph is captured at the first call (its shapes then) with the autocast in force, and
    replayed afterwards; a call with other shapes runs eagerly rather than replay a graph of the
    wrong size. ``captures`` counts the captures, ``replays`` the replays.
    """

    def __init__(self, model: GQNFamilyModel, benchmark: bool, graph: bool) -> None:
        self.model = model
        self.benchmark = benchmark
        self.graph = graph
        self.graphed: Callable[..., tuple[torch.Tensor, ...]] | None = None
        self.shapes: tuple | None = None
        self.sigma: torch.Tensor | None = None
        self.captures = 0
        self.replays = 0

    def __call__(
        self, inputs: tuple[torch.Tensor, ...], sigma: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flags = {(torch.backends.cudnn, "benchmark"): True} if self.benchmark else {}
        with torch_flags(flags):
            if self.graph and torch.is_grad_enabled():
                shapes = tuple(t.shape for t in inputs)
                if self.graphed is None:
                    self._capture(inputs, sigma, shapes)
                if shapes == self.shapes:
                    self.sigma.fill_(sigma)  # a kernel, no host synchronisation
                    self.replays += 1
                    return self.graphed(*inputs, self.sigma)
            out = self.model.core_loss(*inputs, sigma=sigma)
            return out.loss, out.reconstruction, out.kl

    def _capture(self, inputs: tuple[torch.Tensor, ...], sigma: float, shapes: tuple) -> None:
        device = inputs[0].device
        self.sigma = torch.full((), float(sigma), device=device, dtype=torch.float32)
        sample = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in inputs) + (self.sigma,)
        try:
            self.graphed = torch.cuda.make_graphed_callables(_CoreLoss(self.model), sample, allow_unused_input=True)
        except RuntimeError as exc:
            raise RuntimeError(
                f"the L-step core could not be captured as a CUDA graph ({exc}); a host synchronisation "
                "(.item(), a Python branch on a tensor) inside model.core_loss stops a capture. "
                "Run without it: train.fast_path=auto,-cuda_graph"
            ) from exc
        self.shapes = shapes
        self.captures += 1


# Graph nodes that hand a tensor's value to the host (which must wait for the device to get it).
_HOST_SYNC_METHODS = frozenset({"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"})


class HostSyncError(RuntimeError):
    """Code that must run as a CUDA graph reads a tensor's value on the host."""


def _refuse_host_syncs(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
    """A ``torch.compile`` backend that compiles nothing but refuses a graph that reads a tensor's value on the host."""
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target in _HOST_SYNC_METHODS:
            raise HostSyncError(f"the core reads a tensor's value on the host: {node.format_node()}")
    return gm.forward


def check_capturable(model: GQNFamilyModel, episode: Episode, sigma: float = 1.0) -> None:
    """Trace ``model.core_loss`` with ``torch.compile(fullgraph=True)`` and compile nothing: a Python branch on a
    tensor or a data-dependent shape breaks the graph (an error with ``fullgraph``), and a read of a tensor's
    value (``.item()``, which newer torch traces into the graph) is refused.

    What a CUDA graph capture needs, checked on any device (the CPU included) in a second or two.
    """
    inputs = model.loss_inputs(episode)
    core = torch.compile(
        functools.partial(_core_call, model), backend=_refuse_host_syncs, fullgraph=True, dynamic=False
    )
    try:
        with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False):
            core(*inputs, torch.tensor(sigma, device=inputs[0].device))
    finally:
        torch._dynamo.reset()


def _core_call(model: GQNFamilyModel, *inputs: torch.Tensor) -> torch.Tensor:
    *core_inputs, sigma = inputs
    return model.core_loss(*core_inputs, sigma=sigma).loss


def fuse_cells(model: nn.Module, fused: bool = True) -> int:
    """Give every ConvLSTM cell of ``model`` the compiled :func:`lstm_update` (``fused=False``: the eager one back);
    returns how many cells there are."""
    update = None
    if fused:
        # One compiled function per step object; each cell shape and dtype compiles once (a few per model).
        limit = getattr(torch._dynamo.config, "recompile_limit", 8)
        torch._dynamo.config.recompile_limit = max(limit, 64)
        update = torch.compile(lstm_update, dynamic=False, fullgraph=True)
    cells = [m for m in model.modules() if isinstance(m, ConvLSTMCell)]
    for cell in cells:
        cell.fused_update = update
    return len(cells)


class LossObjective(nn.Module):
    """The model's loss and its parts as one forward, so DDP and torch.compile see one call.

    With a ``core`` (:class:`CoreRunner`) the loss runs in its two parts: the representation
    eagerly, then the core through the runner (benchmark mode, CUDA graph).
    """

    def __init__(self, model: nn.Module, core: CoreRunner | None = None) -> None:
        super().__init__()
        self.model = model
        self.core = core

    def forward(self, episode: Episode, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.core is None:
            out = self.model.loss(episode, step)
            return out.loss, out.reconstruction, out.kl
        return self.core(self.model.loss_inputs(episode), self.model.pixel_sigma(step))


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
    fast: FastPath = field(default_factory=FastPath)
    core: CoreRunner | None = None
    # What the fast path could not do for this model and why (e.g. a plugin model without the core split).
    fast_notes: tuple[str, ...] = ()

    def autocast(self) -> contextlib.AbstractContextManager:
        # A CUDA graph replays the casts it captured: autocast's cast cache must stay out of it.
        return autocast(self.device, self.precision, cache=not self.fast.cuda_graph)

    def numerics(self) -> contextlib.AbstractContextManager:
        """The scope every call of this step runs in: CPU flush-to-zero, or the CUDA TF32 setting."""
        if self.device.type == "cuda":
            return torch_flags(tf32_flags(self.fast.tf32))
        return step_numerics(self.device, self.flush_denormal)

    def prepare_batch(self, episode: Episode) -> Episode:
        """The batch as the step consumes it: its images channels-last when the fast path says so."""
        if not self.fast.channels_last:
            return episode
        return dataclasses.replace(
            episode,
            context_images=channels_last_images(episode.context_images),
            query_images=channels_last_images(episode.query_images),
        )

    def fast_path_record(self) -> dict[str, Any]:
        """What a results file records of this step's fast path: the spec, each switch, TF32 as it ran."""
        return {
            "spec": self.fast.spec(),
            **dataclasses.asdict(self.fast),
            "tf32_in_use": tf32_in_use(self.device, self.fast.tf32),
            "notes": list(self.fast_notes),
        }

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step``: linear from lr_start to lr_end, then constant."""
        return linear_anneal(step, self.train.lr_start, self.train.lr_end, self.train.lr_anneal_steps)

    def forward_loss(self, episode: Episode, step: int = 0, label: PhaseLabel = _unlabelled) -> LossTerms:
        """Start update ``step``: drop the last gradients (before the forward, so they do not add to its peak), then the loss."""
        episode = self.prepare_batch(episode)
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
        episode = self.prepare_batch(episode)
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
    fast_path: str | FastPath | None = None,
    distribute: Callable[[nn.Module], nn.Module] | None = None,
) -> TrainStep:
    """The step for ``model`` (already on ``device``) under ``train``; keywords override the config.

    ``precision`` defaults to ``train.amp``, ``compile`` to ``train.compile``,
    ``flush_denormal`` to ``train.flush_denormal``, ``fast_path`` to ``train.fast_path`` (a
    :class:`FastPath` or its spec string). ``distribute`` wraps the loss objective (the training
    loop passes DDP) before it is compiled. The fast path's layout and fused cells are applied to
    ``model`` in place.
    """
    name = check_precision(train.amp if precision is None else precision, device)
    compiled = train.compile if compile is None else compile
    fast = FastPath.parse(train.fast_path if fast_path is None else fast_path, device, compiled)
    notes = []
    if fast.cuda_graph and not _has_core_split(model):
        notes.append(f"cuda_graph off: {type(model).__name__} has its own loss(), not the core the graph replaces")
        fast = dataclasses.replace(fast, cuda_graph=False)
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    if not fuse_cells(model, fast.fused_cell) and fast.fused_cell:
        notes.append("fused_cell: the model has no ConvLSTM cell")
    core = None
    if (fast.cuda_graph or fast.cudnn_benchmark) and _has_core_split(model):
        core = CoreRunner(model, fast.cudnn_benchmark, fast.cuda_graph)
    objective: nn.Module = LossObjective(model, core)
    if distribute is not None:
        objective = distribute(objective)
    if core is not None and core.graph and not isinstance(objective, LossObjective):
        # DDP reduces gradients from hooks as backward produces them; a replayed graph fires none in between.
        notes.append("cuda_graph off: the objective is distributed (DDP)")
        core.graph = False
        fast = dataclasses.replace(fast, cuda_graph=False)
    predictor = model.predict
    if compiled:
        objective = torch.compile(objective, backend=compile_backend)
        predictor = torch.compile(model.predict, backend=compile_backend)
    return TrainStep(
        model=model,
        objective=objective,
        predictor=predictor,
        optimizer=make_adam(model.parameters(), train, fused=fast.fused_adam),
        scaler=torch.amp.GradScaler(device.type, enabled=name == "fp16"),
        device=device,
        precision=name,
        train=train,
        flush_denormal=train.flush_denormal if flush_denormal is None else flush_denormal,
        fast=fast,
        core=core,
        fast_notes=tuple(notes),
    )
