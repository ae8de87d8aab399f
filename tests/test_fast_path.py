"""The step's fast path on the CPU (gqnbench.step.FastPath): its spec grammar, what each switch changes in
the step that runs, its numerics against fp64 (compiled cells included), and graph-capture safety of the
L-step core (no host synchronisation: what a CUDA graph needs). The CUDA half is in test_cuda.py."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import gqnbench.models.convlstm as convlstm
from gqnbench.harness.common import StepSpec, prepare_step
from gqnbench.models import build_model
from gqnbench.numerics import check_numerics
from gqnbench.presets import get_preset
from gqnbench.step import FastPath, UnsupportedCase, build_step, check_capturable

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


def test_spec_grammar_auto_off_and_single_switches():
    assert FastPath.parse("auto", CPU) == FastPath()  # the CPU step is the plain one
    assert FastPath.parse("auto", CUDA) == FastPath(True, True, True, True, True, True)
    assert FastPath.parse("auto,-cuda_graph,-tf32", CUDA) == FastPath(True, True, False, True, False, True)
    assert FastPath.parse("auto", CUDA, compile=True) == FastPath(True, True, True, False, False, True)
    assert FastPath.parse("channels_last, fused_cell", CPU) == FastPath(channels_last=True, fused_cell=True)
    fast = FastPath.parse("auto,-tf32", CUDA)
    assert FastPath.parse(fast.spec(), CUDA) == fast and fast.short() == "cl+bench+cell+graph+adam+notf32"
    assert FastPath().spec() == "off" and FastPath.parse("off", CUDA) == FastPath()
    with pytest.raises(ValueError, match=r"unknown switch 'graphs'.*cuda_graph"):
        FastPath.parse("auto,graphs", CUDA)
    with pytest.raises(UnsupportedCase, match="cuda_graph needs a CUDA device"):
        FastPath.parse("cuda_graph", CPU)
    with pytest.raises(UnsupportedCase, match="compiled"):
        FastPath.parse("fused_cell", CPU, compile=True)


class ConvInputs(TorchDispatchMode):
    """Records the input of every convolution (forward and backward) that runs under it."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.inputs.append(args[0])
        return func(*args, **(kwargs or {}))


def _conv_layouts(model: str, fast_path: str, overrides: tuple = ()) -> set[bool]:
    step = prepare_step(StepSpec(model, "tiny", batch=2, fast_path=fast_path, overrides=overrides))
    with ConvInputs() as seen:
        step.run()
        step.trainer.predict(step.episode)
    # Whether each conv input is stored channels-last (a 1x1 or one-channel map is both ways: left out).
    return {x.is_contiguous(memory_format=torch.channels_last) for x in seen.inputs if min(x.shape[1:]) > 1}


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
@pytest.mark.parametrize("overrides", [(), (("model.fold_linear_ops", False),)], ids=["folded", "authors"])
def test_channels_last_switch_puts_every_convolution_input_in_nhwc(model, overrides):
    assert _conv_layouts(model, "off", overrides) == {False}
    # States, canvas, broadcast viewpoints and r start in it too: no NCHW convolution is left (training, predict).
    assert _conv_layouts(model, "channels_last", overrides) == {True}


def test_fused_adam_and_the_cudnn_benchmark_scope():
    preset = get_preset("tiny")
    step = build_step(build_model("metagqn", preset.model_config("metagqn")), preset.train, CPU, fast_path="fused_adam")
    assert step.optimizer.param_groups[0]["fused"] and step.fast_path_record()["spec"] == "fused_adam"
    seen = []
    step = prepare_step(StepSpec("gqn", "tiny", batch=2, fast_path="cudnn_benchmark"))
    step.model.generation_cores[0].register_forward_pre_hook(lambda *a: seen.append(torch.backends.cudnn.benchmark))
    step.model.representation.register_forward_pre_hook(lambda *a: seen.append(torch.backends.cudnn.benchmark))
    before = torch.backends.cudnn.benchmark
    step.run()
    # The representation (shapes change with the context views drawn) runs without it, the core with it.
    assert seen[0] is False and set(seen[1:]) == {True} and torch.backends.cudnn.benchmark == before


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_fused_cells_are_compiled_and_match_fp64(model):
    from torch._dynamo.utils import counters

    counters.clear()
    r = check_numerics(model, "tiny", "bf16", batch=2, fast_path="channels_last,fused_cell,fused_adam")
    assert r.passed, r.reason
    assert r.fast_path == "channels_last,fused_cell,fused_adam" and r.floor == "bf16"
    assert counters["stats"]["unique_graphs"] >= 1  # the cells' update really went through torch.compile
    fp32 = check_numerics(model, "tiny", "fp32", batch=2, fast_path="channels_last,fused_cell")
    # Same arithmetic as eager fp32 up to rounding order: held to the fp32 floor.
    assert fp32.passed and fp32.floor == "fp32" and fp32.grad_err_fast < 1e-4, fp32.reason


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_channels_last_step_matches_fp64(model):
    r = check_numerics(model, "tiny", "fp32", batch=2, fast_path="channels_last")
    assert r.passed and r.grad_err_fast < 1e-5, r.reason


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_the_core_traces_as_one_graph(model):
    step = prepare_step(StepSpec(model, "tiny", batch=2))
    check_capturable(step.model, step.episode)  # fullgraph=True: no break, no host sync


def _item_in_update(gates, c, static_gates=None):
    if static_gates is not None:
        gates = static_gates + gates
    scale = gates.abs().max().item()  # a host synchronisation: the device must finish before Python goes on
    return convlstm.lstm_update(gates / max(scale, 1.0), c)


def _branch_in_update(gates, c, static_gates=None):
    h, c = convlstm.lstm_update(gates, c, static_gates)
    if c.mean() > 0:  # a Python branch on a tensor's value
        c = c * 0.5
    return h, c


@pytest.mark.parametrize(
    ("sneaked", "message"),
    [(_item_in_update, r"reads a tensor's value on the host.*item"), (_branch_in_update, r"(?i)data.dependent")],
)
def test_a_host_sync_sneaked_into_the_core_is_caught(sneaked, message):
    step = prepare_step(StepSpec("metagqn", "tiny", batch=2))
    for cell in step.model.modules():
        if isinstance(cell, convlstm.ConvLSTMCell):
            cell.fused_update = sneaked
    step.run()  # eagerly it still runs...
    with pytest.raises(Exception, match=message):
        check_capturable(step.model, step.episode)  # ...but it could not be captured


def test_the_fast_path_is_recorded_and_off_by_default_on_the_cpu():
    preset = get_preset("tiny")
    assert preset.train.fast_path == "auto"
    step = build_step(build_model("gqn", preset.model_config("gqn")), preset.train, CPU)
    record = step.fast_path_record()
    assert record["spec"] == "off" and record["tf32_in_use"] == {"cudnn": None, "matmul": None}
    assert not any(record[name] for name in ("channels_last", "cudnn_benchmark", "fused_cell", "cuda_graph"))
    assert step.core is None  # the plain objective: bit-identical to the step before the fast path
