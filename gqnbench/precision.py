"""The training precision chosen by measurement: ``train.amp = "auto"``.

bf16 autocast pays where the hardware multiplies bf16 fast (AMX on recent Intel CPUs, tensor
cores); on a CPU without it the casts cost more than they save and bf16 is slower than fp32.
``auto`` therefore measures on the host that trains: the training step of each model in fp32 and
in bf16, side by side (interleaved rounds, so background load hits both alike; medians), at the
preset's batch and the thread count the runs use, and checks bf16's loss and gradients against
fp64 (:func:`gqnbench.numerics.check_numerics`). It chooses bf16 only when bf16 is faster for
every model measured and passes every check; otherwise fp32.

Resolved once: a run measures at its start and records the :class:`PrecisionChoice` in its
``training_run`` file (``precision_choice``) and checkpoint, and a resumed run keeps it; the main
job measures once for both models and hands the choice to all its runs (``train.amp_choice``,
the choice as JSON), recording it in ``mainjob.json``. ``--amp fp32|bf16`` (or any explicit
``train.amp``) skips the measurement.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gqnbench.data.episode import Episode
from gqnbench.models import build_model
from gqnbench.numerics import check_numerics
from gqnbench.presets import Preset
from gqnbench.step import build_step, resolve_device, synchronize, threads

AUTO = "auto"
CANDIDATES = ("fp32", "bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``amp = auto`` chose and the evidence: each model's median step time per precision, the bf16 checks."""

    chosen: str  # fp32 | bf16
    step_s: dict[str, dict[str, float]]  # model -> {"fp32": median s, "bf16": median s}
    numerics_passed: dict[str, bool]  # model -> bf16 passed its fp64 check
    reason: str
    device: str
    threads: int
    batch: int
    rounds: int
    source: str = "measured"  # measured (by this run), main job, or checkpoint (a resumed run's record)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> PrecisionChoice:
        fields = {f.name for f in dataclasses.fields(cls)}
        choice = cls(**{k: v for k, v in data.items() if k in fields})
        return dataclasses.replace(choice, source=source) if source else choice


StepTimer = Callable[[str, Preset, torch.device, int, int], dict[str, float]]


def time_precisions(model: str, preset: Preset, device: torch.device, rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds of one training step of ``model`` at ``preset`` in fp32 and in bf16, timed in interleaved rounds.

    Both steps are the training step (gqnbench.step, the preset's fast path), on one synthetic batch of
    the preset's size with the mean number of context views training draws.
    """
    cfg = preset.model_config(model)
    data = preset.data
    episode = Episode.random(
        preset.train.batch_size,
        cfg.image_size,
        num_context=max(1, (data.min_context + data.max_context) // 2),
        generator=torch.Generator().manual_seed(0),
        device=device,
    )
    steps = {}
    for precision in CANDIDATES:
        torch.manual_seed(preset.train.seed)
        steps[precision] = build_step(build_model(model, cfg).to(device), preset.train, device, precision=precision)
    times: dict[str, list[float]] = {p: [] for p in CANDIDATES}
    for r in range(warmup + rounds):
        for precision, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step.train_step(episode, r)
            synchronize(device)
            if r >= warmup:
                times[precision].append(time.perf_counter() - start)
    return {p: statistics.median(ts) for p, ts in times.items()}


def choose_precision(
    preset: Preset,
    models: Sequence[str],
    device: str | torch.device = "cpu",
    *,
    num_threads: int | None = None,
    rounds: int = 15,
    warmup: int = 3,
    timer: StepTimer = time_precisions,
    numerics_batch: int = 4,
) -> PrecisionChoice:
    """Measure fp32 against bf16 for every model in ``models`` and choose (see the module docstring).

    ``num_threads``: torch's threads while measuring (the runs' own; None leaves them). ``timer``
    measures one model's two median step times (:func:`time_precisions`; tests pass their own times).
    """
    dev = resolve_device(device)
    with threads(num_threads):
        step_s = {m: timer(m, preset, dev, rounds, warmup) for m in models}
        passed = {m: check_numerics(m, preset, "bf16", batch=numerics_batch, device=str(dev)).passed for m in models}
        used = torch.get_num_threads()
    slower = [m for m in models if not step_s[m]["bf16"] < step_s[m]["fp32"]]
    failed = [m for m in models if not passed[m]]
    if failed:
        chosen, reason = "fp32", f"bf16 failed its numerics check against fp64 for {', '.join(failed)}"
    elif slower:
        chosen, reason = "fp32", f"bf16 is not faster than fp32 here for {', '.join(slower)}"
    else:
        chosen, reason = "bf16", "bf16 is faster than fp32 for every model and passes its numerics check"
    return PrecisionChoice(
        chosen=chosen,
        step_s=step_s,
        numerics_passed=passed,
        reason=reason,
        device=str(dev),
        threads=used,
        batch=preset.train.batch_size,
        rounds=rounds,
    )


def describe(choice: PrecisionChoice) -> str:
    """One line: what was chosen, why, and the step times it was chosen on."""
    times = "; ".join(
        f"{m}: fp32 {t['fp32'] * 1e3:.1f} ms, bf16 {t['bf16'] * 1e3:.1f} ms" for m, t in choice.step_s.items()
    )
    return f"amp=auto chose {choice.chosen} ({choice.reason}; {times}; {choice.threads} thread(s), {choice.source})"
