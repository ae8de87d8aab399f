"""CUDA paths (skipped without a GPU): training in every precision, CPU/GPU agreement, loss numerics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gqnbench.data.episode import Episode
from gqnbench.data.generate import generate_dataset
from gqnbench.models import build_model
from gqnbench.presets import get_preset
from gqnbench.training.data_source import load_training_data
from gqnbench.training.loop import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (an NVIDIA GPU and driver)"),
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cuda-data") / "root"
    return generate_dataset(root, 40, seed=3, val_fraction=0.2, scenes_per_file=10, workers=1, progress=False)


def _preset(root: Path, **extra: object):
    return get_preset(
        "tiny",
        {"data.root": str(root), "data.val_scenes": 8, "train.tensorboard": False, "train.log_every": 1, **extra},
    )


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_training_on_cuda_in_every_precision(model: str, amp: str, data_root: Path, tmp_path: Path) -> None:
    preset = _preset(data_root, **{"train.device": "cuda", "train.amp": amp})
    data = load_training_data(preset.data, progress=False)
    result = train(preset, model, tmp_path, steps=20, data=data, progress=False)
    doc = result.doc
    assert result.status == "completed" and doc["device"].startswith("cuda")
    assert all(math.isfinite(p["loss"]) for p in doc["train_curve"])
    # Loss terms are fp32 under autocast: the KL of GQN is never negative.
    assert all(p["kl"] >= 0.0 for p in doc["train_curve"])
    assert doc["eval_curve"][-1]["val_mse"] < doc["eval_curve"][0]["val_mse"]


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_cuda_and_cpu_agree_in_fp32(model: str) -> None:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = get_preset("tiny").model_config(model)
    net = build_model(model, cfg).double()
    episode = Episode.random(3, cfg.image_size, num_context=2, generator=torch.Generator().manual_seed(1))
    with torch.random.fork_rng(devices=[0]):
        torch.manual_seed(5)
        pred_cpu = net.predict(episode.to("cpu", torch.float64), use_mean=True)
        torch.manual_seed(5)
        loss_cpu = net.loss(episode.to("cpu", torch.float64)).loss
    net_gpu = net.to("cuda")
    pred_gpu = net_gpu.predict(episode.to("cuda", torch.float64), use_mean=True)
    # Losses sample z with device-specific RNG streams: compare the deterministic mean prediction,
    # and only the finiteness and scale of the loss.
    torch.testing.assert_close(pred_gpu.cpu(), pred_cpu, rtol=1e-9, atol=1e-9)
    loss_gpu = net_gpu.loss(episode.to("cuda", torch.float64)).loss
    assert math.isfinite(float(loss_gpu)) and abs(float(loss_gpu) - float(loss_cpu)) < 0.2 * abs(float(loss_cpu))


def test_bf16_kl_matches_fp64_on_cuda() -> None:
    from gqnbench.models.base import gaussian_kl

    g = torch.Generator(device="cuda").manual_seed(0)
    mu_p = torch.randn(8, 3, 4, 4, device="cuda", generator=g)
    logvar_p = 0.5 * torch.randn(8, 3, 4, 4, device="cuda", generator=g)
    mu_q = (mu_p + 0.05 * torch.randn(mu_p.shape, device="cuda", generator=g)).bfloat16()
    logvar_q = (logvar_p + 0.05 * torch.randn(mu_p.shape, device="cuda", generator=g)).bfloat16()
    mu_p, logvar_p = mu_p.bfloat16(), logvar_p.bfloat16()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)
    ref = gaussian_kl(*(t.double() for t in (mu_q, logvar_q, mu_p, logvar_p)))
    assert kl.dtype == torch.float32 and bool((kl >= 0).all())
    torch.testing.assert_close(kl.double(), ref, rtol=1e-3, atol=0.0)


# --- the step's fast path on CUDA (gqnbench.step.FastPath) -------------------------------------------------------


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_fast_path_matches_fp64_on_cuda(model: str, preset: str = "tiny") -> None:
    # (The paper preset's is checked by perf-targets in the device session, on the judged fast path.)
    from gqnbench.numerics import check_numerics

    # Everything on: channels-last, cuDNN benchmark, TF32, compiled cells, the core as a CUDA graph, fused Adam.
    r = check_numerics(model, preset, "bf16", batch=4, device="cuda", fast_path="auto")
    assert r.passed, r.reason
    assert r.fast_path == "channels_last,cudnn_benchmark,tf32,fused_cell,cuda_graph,fused_adam"
    fp32 = check_numerics(model, preset, "fp32", batch=4, device="cuda", fast_path="auto")
    assert fp32.passed and fp32.floor == "tf32", fp32.reason  # fp32 with TF32 on is judged as TF32


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_the_core_is_captured_once_and_replayed(model: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    from gqnbench.harness.common import StepSpec, prepare_step

    step = prepare_step(StepSpec(model, "cpu", batch=8, dtype="bf16", device="cuda", fast_path="auto"))
    before = {k: v.clone() for k, v in step.model.state_dict().items()}
    losses = [float(step.run().detach()) for _ in range(3)]
    core = step.trainer.core
    assert core is not None and core.captures == 1 and core.replays == 3
    assert all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(before[k], v) for k, v in step.model.state_dict().items())  # Adam updated
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step.run()
        torch.cuda.synchronize()
    assert any("GraphLaunch" in e.name for e in prof.events())  # the core ran as a graph replay
    assert step.trainer.fast_path_record()["tf32_in_use"] == {"cudnn": True, "matmul": True}


def test_a_host_sync_in_the_core_fails_the_capture_with_a_clear_error() -> None:
    import gqnbench.models.convlstm as convlstm
    from gqnbench.harness.common import StepSpec, prepare_step

    def synced(gates, c, static_gates=None):
        h, c = convlstm.lstm_update(gates, c, static_gates)
        return h * (1.0 + 0 * c.sum().item()), c  # .item(): the host waits for the device

    step = prepare_step(StepSpec("metagqn", "tiny", batch=2, device="cuda", fast_path="auto,-fused_cell"))
    for cell in step.model.modules():
        if isinstance(cell, convlstm.ConvLSTMCell):
            cell.fused_update = synced
    with pytest.raises(RuntimeError, match="could not be captured as a CUDA graph.*-cuda_graph"):
        step.run()


def test_every_cuda_cost_case_records_gpu_memory() -> None:
    from gqnbench.harness.common import StepSpec
    from gqnbench.harness.throughput import matmul_peak, measure_interleaved, measure_throughput

    peaks = matmul_peak("cuda", ("fp32", "bf16"), n=1024, rounds=3)
    assert peaks["tf32_flop_per_s"] > peaks["fp32_flop_per_s"]  # measured beside it, as the fp32/bf16 ones
    plain = measure_throughput(StepSpec("gqn", "cpu", batch=8, device="cuda"), rounds=3, warmup=2, peaks=peaks)
    assert plain["mfu_peak"] == "tf32"  # cuDNN ran the fp32 convolutions as TF32: judged against that peak
    strict = measure_throughput(StepSpec("gqn", "cpu", batch=8, device="cuda", fast_path="-tf32"), 3, 2, peaks)
    assert strict["mfu_peak"] == "fp32" and strict["fast_path"]["tf32_in_use"] == {"cudnn": False, "matmul": False}
    specs = [StepSpec(m, "cpu", batch=8, dtype="bf16", device="cuda", fast_path=f) for m in ("gqn", "metagqn")
             for f in ("off", "auto")]  # fmt: skip
    rows, _ = measure_interleaved(specs, rounds=3, warmup=2, matmul_n=1024)
    for row in [plain, strict, *rows]:
        assert row["peak_memory_bytes"] > 0 and row["allocator_reserved_peak_bytes"] >= row["allocator_peak_bytes"] > 0
        assert row["nvml_used_bytes"] is None or row["nvml_used_bytes"] >= row["allocator_peak_bytes"]
    graphed = [r for r in rows if r["fast_path"]["cuda_graph"]]
    assert graphed and all(r["graph_pool_bytes"] > 0 for r in graphed)  # the graphs' memory is counted


@pytest.mark.parametrize("model", ["gqn", "metagqn"])
def test_cuda_phases_cover_the_step(model: str, tmp_path: Path) -> None:
    from gqnbench.harness.common import StepSpec
    from gqnbench.harness.profile import check_coverage, profile_phases

    spec = StepSpec(model, "cpu", batch=8, dtype="bf16", device="cuda", fast_path="channels_last,cudnn_benchmark,tf32")
    case = profile_phases(spec, tmp_path, warmup=2, active=3, plain_rounds=2, gzip=True)
    assert case["phase_time"] == "cuda timeline"
    assert check_coverage(case) is None, check_coverage(case)  # >= 95% of the step in labelled phases
    for phase in case["phases"]:
        assert phase["time_s"] > 0 and 0 < phase["busy_s"] <= phase["time_s"] + 1e-9, phase
    assert case["memory"]["peak_memory_bytes"] > 0
