"""Options and shared fixtures of the pytest-benchmark suite.

    pytest benchmarks/ --benchmark-autosave                      # cpu preset, both models, the full matrix
    pytest benchmarks/ --quick                                   # the < 3 min subset (2 cores)
    pytest benchmarks/ --device cuda --preset paper --models gqn  # on a GPU
    pytest benchmarks/ --benchmark-compare                        # against the last autosaved run

Options: ``--device cpu|cuda``, ``--preset NAME`` (default cpu), ``--quick``, ``--models gqn,metagqn``,
``--rounds N`` (override the per-preset rounds). The throughput matrix is model x mode x dtype
(fp32, bf16, fp16) x eager/compiled; cases the device cannot run (fp16 or anything CUDA on a
CPU machine) are skipped with a reason, not failed. ``--quick`` keeps eager cases only (train
fp32/bf16, inference fp32), fewer rounds, a 2048^2 peak matmul, and skips tests marked ``slow``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from gqnbench.harness.common import StepSpec
from gqnbench.presets import MODEL_NAMES

# (rounds, warmup rounds) per preset: a paper-size step takes seconds, a tiny one milliseconds.
ROUNDS = {"tiny": (30, 3), "cpu": (10, 2), "paper": (3, 1)}
QUICK_ROUNDS = {"tiny": (10, 2), "cpu": (5, 1), "paper": (2, 1)}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gqnbench", "gqnbench benchmark matrix")
    group.addoption("--device", default="cpu", choices=("cpu", "cuda"), help="device to benchmark (default cpu)")
    group.addoption("--preset", default="cpu", help="size preset (default cpu)")
    group.addoption("--quick", action="store_true", help="the quick subset (< 3 min on 2 cores)")
    group.addoption("--models", default=",".join(MODEL_NAMES), help="comma-separated models (default all)")
    group.addoption("--rounds", type=int, default=None, help="measured rounds per case (default per preset)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--quick"):
        return
    skip = pytest.mark.skip(reason="marked slow; not in the --quick subset")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


class BenchSettings:
    """The parsed options, in one object the benchmarks share."""

    def __init__(self, config: pytest.Config) -> None:
        self.device = config.getoption("--device")
        self.preset = config.getoption("--preset")
        self.quick = config.getoption("--quick")
        self.models = [m.strip() for m in config.getoption("--models").split(",") if m.strip()]
        table = QUICK_ROUNDS if self.quick else ROUNDS
        rounds, warmup = table.get(self.preset, table["cpu"])
        self.rounds = config.getoption("--rounds") or rounds
        self.warmup = warmup
        self.matmul_n = 2048 if self.quick else 4096

    def skip_if_unavailable(self) -> None:
        if self.device == "cuda" and not torch.cuda.is_available():
            pytest.skip("--device cuda, but CUDA is not available here")

    def cases(self) -> list[StepSpec]:
        """The throughput matrix for these options (fp16 is listed everywhere, and skips off CUDA)."""
        if self.quick:
            combos = [("train", "fp32", False), ("train", "bf16", False), ("infer", "fp32", False)]
        else:
            combos = [
                (mode, dtype, compiled)
                for mode in ("train", "infer")
                for dtype in ("fp32", "bf16", "fp16")
                for compiled in (False, True)
            ]
        cases = [
            StepSpec(model, self.preset, mode=mode, dtype=dtype, compiled=compiled, device=self.device)
            for model in self.models
            for mode, dtype, compiled in combos
        ]
        if not self.quick:
            # The authors' formulation beside the folded default: what fold_linear_ops saves.
            unfolded = (("model.fold_linear_ops", False),)
            cases += [
                StepSpec(model, self.preset, mode="train", dtype=dtype, device=self.device, overrides=unfolded)
                for model in self.models
                for dtype in ("fp32", "bf16")
            ]
        return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "step_case" in metafunc.fixturenames:
        cases = BenchSettings(metafunc.config).cases()
        metafunc.parametrize("step_case", cases, ids=[c.label() for c in cases])


@pytest.fixture(scope="session")
def bench_settings(pytestconfig: pytest.Config) -> BenchSettings:
    return BenchSettings(pytestconfig)


@pytest.fixture(scope="session")
def matmul_peaks(bench_settings: BenchSettings) -> dict:
    """Dense matmul FLOP/s per dtype on this device, measured once per session: the MFU denominator."""
    from gqnbench.harness.throughput import matmul_peak

    bench_settings.skip_if_unavailable()
    dtypes = ("fp32", "bf16", "fp16") if bench_settings.device == "cuda" else ("fp32", "bf16")
    return matmul_peak(bench_settings.device, dtypes, n=bench_settings.matmul_n)


@pytest.fixture
def measured(benchmark) -> Callable[[], tuple[float, float]]:  # noqa: ANN001
    """Median and IQR in seconds of the benchmark just run; NaN under --benchmark-disable.

    With benchmarking disabled pytest-benchmark runs the target once, untimed, and keeps no
    stats, so the rates derived from them are NaN rather than an error.
    """

    def read() -> tuple[float, float]:
        if benchmark.stats is None:
            return math.nan, math.nan
        return benchmark.stats.stats.median, benchmark.stats.stats.iqr

    return read
