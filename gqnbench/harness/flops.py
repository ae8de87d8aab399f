"""FLOPs per scene: forward and forward+backward with FlopCounterMode, forward multiply-adds with fvcore.

Units (SPEC section 8): ``torch.utils.flop_counter.FlopCounterMode`` counts FLOP = 2 per
multiply-add and covers backward; fvcore's ``FlopCountAnalysis`` counts multiply-adds
(MAC), forward only, by tracing with ``torch.jit``. Both count only convolutions and
matmuls as "compute", so on those two the counts agree exactly up to the factor 2
(a test checks this). fvcore also gets handles for the elementwise ops of the ConvLSTM
gates and the losses (sigmoid, tanh, mul, add, exp, ...): each output element counts one
op, reported separately as ``fvcore_elementwise_ops_per_scene``, so nothing is silently
skipped or warned about.

FlopCounterMode runs on the meta device by default (shapes only: a paper-size model costs
milliseconds); fvcore needs one real CPU forward (about a second at paper size). Per-module numbers use the groups of ``model.module_groups()``; the
backward of each op is attributed to the group whose forward created it, via a pre-hook
on the op's autograd node (FlopCounterMode's own module tracker misattributes backward
through shared, repeatedly called modules).

``costs.json`` field (per model; "per scene" = divided by the batch size)::

    flops[model] = {"forward_per_scene": FLOP, "train_per_scene": FLOP (forward+backward),
                    "infer_per_scene": FLOP (predict of one query), "train_to_forward": ratio,
                    "fvcore_forward_macs_per_scene": MAC, "fvcore_elementwise_ops_per_scene": ops,
                    "fvcore_by_operator": {op: MAC or ops per scene},
                    "by_operator": {"forward": {aten op: FLOP}, "train": {...}},
                    "per_module": {group: {"forward": FLOP, "train": FLOP}},
                    "num_context": M, "num_queries": K, "unit": "FLOP = 2 x multiply-add",
                    "authors_forward_per_scene": FLOP, "authors_train_per_scene": FLOP}

The ``authors_*`` counts are of the same model with ``fold_linear_ops=False``: the
step-invariant core inputs recomputed at every step, as the authors' code does. They are
the numbers SPEC section 7 quotes (90.8 / 272 GFLOP at the paper preset) and the ones to
use when comparing with the authors' utilisation; the plain counts are what this
implementation executes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from gqnbench.data.episode import Episode
from gqnbench.harness.common import as_preset, make_episode, model_config
from gqnbench.models import GQNFamilyModel, build_model
from gqnbench.presets import Preset

OTHER = "other"
# fvcore operator names that are convolutions or matmuls (multiply-adds); everything else is elementwise.
FVCORE_MAC_OPERATORS = frozenset({"conv", "matmul", "linear", "addmm", "bmm", "einsum", "mm", "baddbmm"})


class _GroupAttribution(TorchFunctionMode):
    """Attribute a FlopCounterMode's running total to module groups, forward and backward.

    Forward: global module hooks keep a stack of the group being executed; whenever the
    group changes, the FLOPs counted since the last change go to the previous group.
    Backward: every autograd node created in the forward gets a pre-hook that switches to
    the group that created it, so its backward FLOPs land there too.
    """

    def __init__(self, model: GQNFamilyModel, counter: FlopCounterMode) -> None:
        super().__init__()
        self.counter = counter
        self.group_of: dict[int, str] = {}
        for name, modules in model.module_groups().items():
            for module in modules:
                for sub in module.modules():
                    self.group_of.setdefault(id(sub), name)
        self.stack: list[str] = [OTHER]
        self.current = OTHER
        self.last_total = 0
        self.totals: dict[str, int] = defaultdict(int)
        self.hooked: set[int] = set()
        self.handles: list = []

    def switch(self, group: str) -> None:
        now = self.counter.get_total_flops()
        self.totals[self.current] += now - self.last_total
        self.last_total = now
        self.current = group

    def flush(self) -> dict[str, int]:
        self.switch(self.current)
        return dict(self.totals)

    def _pre(self, module: nn.Module, args: object) -> None:
        self.stack.append(self.group_of.get(id(module), self.stack[-1]))
        if self.stack[-1] != self.current:
            self.switch(self.stack[-1])

    def _post(self, module: nn.Module, args: object, output: object) -> None:
        self.stack.pop()
        if self.stack[-1] != self.current:
            self.switch(self.stack[-1])

    def __enter__(self):
        self.handles = [
            nn.modules.module.register_module_forward_pre_hook(self._pre),
            nn.modules.module.register_module_forward_hook(self._post),
        ]
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        group = self.current
        for t in out if isinstance(out, (tuple, list)) else (out,):
            node = getattr(t, "grad_fn", None) if isinstance(t, torch.Tensor) else None
            if node is not None and id(node) not in self.hooked:
                self.hooked.add(id(node))
                node.register_prehook(lambda grads, g=group: self.switch(g))
        return out


def _by_operator(counter: FlopCounterMode) -> dict[str, int]:
    return {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}


@contextlib.contextmanager
def _counting(model: GQNFamilyModel) -> Iterator[tuple[FlopCounterMode, _GroupAttribution]]:
    counter = FlopCounterMode(display=False)
    with counter:
        attribution = _GroupAttribution(model, counter)
        with attribution:
            yield counter, attribution


def count_flops(model: GQNFamilyModel, episode: Episode, step: int = 0) -> dict:
    """FlopCounterMode FLOPs (2 per MAC) of one training forward, its backward, and one predict; whole batch."""
    with _counting(model) as (counter, attribution):
        loss = model(episode, step)
        forward_groups = attribution.flush()
        forward = counter.get_total_flops()
        forward_ops = _by_operator(counter)
        loss.backward()
        train_groups = attribution.flush()
        train = counter.get_total_flops()
        train_ops = _by_operator(counter)
    model.zero_grad(set_to_none=True)
    with torch.no_grad(), FlopCounterMode(display=False) as infer_counter:
        model.predict(episode)
    groups = sorted(set(forward_groups) | set(train_groups), key=lambda g: (g == OTHER, g))
    return {
        "forward": forward,
        "train": train,
        "infer": infer_counter.get_total_flops(),
        "by_operator": {"forward": forward_ops, "train": train_ops},
        "per_module": {g: {"forward": forward_groups.get(g, 0), "train": train_groups.get(g, 0)} for g in groups},
    }


class _LossOfTensors(nn.Module):
    """fvcore traces with torch.jit, which needs a module taking tensors, not an Episode."""

    def __init__(self, model: GQNFamilyModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, context_images, context_viewpoints, context_scene, query_images, query_viewpoints):
        return self.model(Episode(context_images, context_viewpoints, context_scene, query_images, query_viewpoints))


def _fvcore_handles() -> dict:
    from fvcore.nn.jit_handles import elementwise_flop_counter

    per_output = elementwise_flop_counter(0, 1)  # one op per output element
    per_input = elementwise_flop_counter(1, 0)  # reductions: one op per input element
    no_compute = lambda inputs, outputs: 0  # noqa: E731 - data movement and RNG: no arithmetic
    handles = {
        f"aten::{op}": per_output
        for op in (
            "add", "add_", "sub", "rsub", "mul", "mul_", "div", "sigmoid", "tanh", "exp", "log",
            "pow", "relu", "relu_", "neg", "sqrt", "rsqrt", "clamp", "square", "abs",
        )
    }  # fmt: skip
    handles.update({f"aten::{op}": per_input for op in ("sum", "mean", "index_add", "index_add_")})
    handles.update(
        {
            f"aten::{op}": no_compute
            for op in ("cat", "clone", "randn_like", "randn", "repeat_interleave", "expand", "zeros_like", "copy_")
        }
    )
    return handles


def fvcore_forward(model: GQNFamilyModel, episode: Episode) -> dict:
    """fvcore's forward count: multiply-adds of conv/matmul, elementwise ops, and any op still unsupported."""
    with warnings.catch_warnings():
        # fvcore calls torch.jit.script at import and traces with torch.jit, which newer torch marks
        # deprecated; the count itself is unaffected.
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis

        inputs = (
            episode.context_images,
            episode.context_viewpoints,
            episode.context_scene,
            episode.query_images,
            episode.query_viewpoints,
        )
        analysis = FlopCountAnalysis(_LossOfTensors(model), inputs).set_op_handle(**_fvcore_handles())
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        by_op = dict(analysis.by_operator())
        unsupported = dict(analysis.unsupported_ops())
    macs = sum(n for op, n in by_op.items() if op in FVCORE_MAC_OPERATORS)
    return {
        "macs": int(macs),
        "elementwise": int(sum(n for op, n in by_op.items() if op not in FVCORE_MAC_OPERATORS)),
        "by_operator": {op: int(n) for op, n in by_op.items()},
        "unsupported": unsupported,
    }


def flop_report(
    model: str,
    preset: str | Preset = "paper",
    batch: int = 1,
    num_context: int = 3,
    num_queries: int = 1,
    device: str | torch.device = "meta",
    fvcore: bool = True,
) -> dict:
    """``flops[model]`` of costs.json: per-scene counts at ``num_context`` context views (SPEC: 3)."""
    preset = as_preset(preset)
    cfg = model_config(model, preset)
    torch.manual_seed(0)
    with torch.device(device):
        net = build_model(model, cfg)
    episode = make_episode(cfg, batch, num_context, num_queries, device=device)
    counts = count_flops(net, episode)
    per = 1.0 / batch
    report = {
        "unit": "FLOP = 2 x multiply-add (conv and matmul only); fvcore fields in multiply-adds",
        "num_context": num_context,
        "num_queries": num_queries,
        "forward_per_scene": counts["forward"] * per,
        "train_per_scene": counts["train"] * per,
        "infer_per_scene": counts["infer"] * per,
        "train_to_forward": counts["train"] / counts["forward"] if counts["forward"] else None,
        "by_operator": {k: {op: n * per for op, n in v.items()} for k, v in counts["by_operator"].items()},
        "per_module": {g: {k: n * per for k, n in v.items()} for g, v in counts["per_module"].items()},
    }
    with torch.device("meta"):
        authors_net = build_model(model, dataclasses.replace(cfg, fold_linear_ops=False))
    authors = count_flops(authors_net, make_episode(cfg, batch, num_context, num_queries, device="meta"))
    report["authors_forward_per_scene"] = authors["forward"] * per
    report["authors_train_per_scene"] = authors["train"] * per
    if fvcore:
        # torch.jit tracing cannot run on the meta device, so fvcore sees a real CPU copy (one forward).
        torch.manual_seed(0)
        fv = fvcore_forward(build_model(model, cfg), make_episode(cfg, batch, num_context, num_queries))
        report.update(
            {
                "fvcore_forward_macs_per_scene": fv["macs"] * per,
                "fvcore_elementwise_ops_per_scene": fv["elementwise"] * per,
                "fvcore_by_operator": {op: n * per for op, n in fv["by_operator"].items()},
                "fvcore_unsupported_ops": fv["unsupported"],
            }
        )
    return report


def step_flops(
    model: str,
    preset: str | Preset,
    mode: str,
    batch: int,
    num_context: int = 3,
    num_queries: int = 1,
    authors_formulation: bool = False,
) -> float:
    """FLOP of one harness step (train: forward+backward; infer: predict), counted on the meta device.

    ``authors_formulation`` counts the step-invariant inputs at every step, as the
    authors' code computes them (the convention of the SPEC's utilisation anchors).
    """
    preset = as_preset(preset)
    cfg = model_config(model, preset)
    if authors_formulation:
        cfg = dataclasses.replace(cfg, fold_linear_ops=False)
    with torch.device("meta"):
        net = build_model(model, cfg)
    episode = make_episode(cfg, batch, num_context, num_queries, device="meta")
    if mode == "infer":
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net.predict(episode)
        return float(counter.get_total_flops())
    with FlopCounterMode(display=False) as counter:
        net(episode).backward()
    return float(counter.get_total_flops())
