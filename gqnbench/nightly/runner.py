"""The ``run`` command: benchmarks, a short fixed-seed training run, the report, then the check.

Every step is a subprocess (``python -m pytest benchmarks/ ...``, ``python -m gqnbench train
...``, ``python -m gqnbench.report ...``) whose output is shown and kept in ``DIR/logs/``;
its exit code lands in ``DIR/nightly.json`` (kind ``nightly_run``), rewritten after every
step so an interrupted run still says how far it got. A failed benchmark or training step
fails the gate; a failed report is recorded and shown but does not.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gqnbench.files import atomic_write_text
from gqnbench.nightly import REPO_ROOT
from gqnbench.nightly.collect import BENCH_FILE, RUN_MANIFEST, TRAIN_DIR, run_inputs
from gqnbench.nightly.schema import HostRecord, NightlyRun, PlanRecord, StepRecord, write_doc

STEPS = ("bench", "train", "report", "check")


@dataclass(frozen=True)
class DeviceDefaults:
    bench_presets: tuple[str, ...]
    train_preset: str
    train_steps: int
    preset_args: dict[str, tuple[str, ...]] = field(default_factory=dict)


# The paper preset's training step of every model, eager fp32/bf16 (the quick matrix's training
# cases), with the step benchmarks only: the data pipeline is preset-independent and runs with the cpu preset.
PAPER_TRAINING_STEPS = ("--quick", "--modes", "train", "-k", "test_step")

# Full nightly vs --quick, per device type. The CUDA nightly benchmarks the study's own
# configuration (its training step) beside the cpu preset's quick matrix; the training check
# uses a size whose NLL moves measurably within a few hundred steps.
DEFAULTS: dict[tuple[str, bool], DeviceDefaults] = {
    ("cuda", False): DeviceDefaults(
        bench_presets=("paper", "cpu"),
        train_preset="cpu",
        train_steps=300,
        preset_args={"paper": PAPER_TRAINING_STEPS, "cpu": ("--quick",)},
    ),
    ("cuda", True): DeviceDefaults(bench_presets=("cpu",), train_preset="tiny", train_steps=50),
    ("cpu", False): DeviceDefaults(bench_presets=("cpu",), train_preset="cpu", train_steps=60),
    # The cpu preset's steps (tens of ms) are compute-bound, so their ratio to the reference matmul
    # holds from run to run; the tiny preset's few-ms steps are mostly Python dispatch, whose share
    # moved by half between two runs of an unchanged commit on one quiet host.
    ("cpu", True): DeviceDefaults(bench_presets=("cpu",), train_preset="tiny", train_steps=30),
}


class RunPlan(PlanRecord):
    """A :class:`PlanRecord` plus what only this invocation needs (where, how long, which python)."""

    device: str
    out: Path
    quick: bool = False
    timeout_s: float | None = None
    python: str = sys.executable
    cwd: Path = REPO_ROOT

    def record(self) -> PlanRecord:
        return PlanRecord.model_validate(self.model_dump(include=set(PlanRecord.model_fields)))


def make_plan(device: str, out: Path, quick: bool, **overrides: Any) -> RunPlan:
    """A plan with the device's defaults, then any explicit (non-None, non-empty) overrides.

    Presets named explicitly run their plain matrix: the defaults' per-preset arguments
    (the paper preset's training steps only) go with the default presets only.
    """
    d = DEFAULTS[(device.split(":")[0], quick)]
    given = {k: v for k, v in overrides.items() if v not in (None, (), [], frozenset())}
    unknown = set(given) - set(RunPlan.model_fields)
    if unknown:
        raise TypeError(f"unknown plan fields {sorted(unknown)}")
    if "skip" in given:
        given["skip"] = tuple(sorted(set(given["skip"])))
    defaults = {"bench_presets": d.bench_presets, "train_preset": d.train_preset, "train_steps": d.train_steps,
                "preset_args": {} if "bench_presets" in given else d.preset_args}  # fmt: skip
    return RunPlan(device=device, out=out, quick=quick, **{**defaults, **given})


@dataclass
class RunState:
    plan: RunPlan
    device_name: str
    environment: dict[str, Any]
    host: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    interrupted: bool = False

    def write_manifest(self) -> Path:
        doc = NightlyRun(
            device=self.plan.device.split(":")[0],
            device_name=self.device_name,
            quick=self.plan.quick,
            host=HostRecord.model_validate(self.host) if self.host else None,
            plan=self.plan.record(),
            interrupted=self.interrupted,
            steps=self.steps,
        )
        return write_doc(self.plan.out / RUN_MANIFEST, doc, environment=self.environment)


def run_logged(name: str, cmd: list[str], plan: RunPlan, *, gates: bool = True) -> StepRecord:
    """Run ``cmd`` in the repo root, echoing its output and keeping it in ``DIR/logs/<name>.log``."""
    log_path = plan.out / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n=== [{name}] {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(
            cmd, cwd=plan.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            rc = proc.wait(timeout=plan.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            log.write(f"\n[nightly] killed after {plan.timeout_s} s\n")
            wall = time.perf_counter() - start
            return StepRecord(
                name=name, command=cmd, rc=124, wall_s=wall, log=str(log_path), gates=gates, note="timed out"
            )
        except KeyboardInterrupt:
            # The child got the same SIGINT; give it a moment to write what it has, then stop it.
            try:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, OSError):
                proc.kill()
                proc.wait()
            raise
    wall = time.perf_counter() - start
    print(f"=== [{name}] exit {rc} after {wall:.1f} s (log {log_path})", flush=True)
    return StepRecord(name=name, command=cmd, rc=rc, wall_s=wall, log=str(log_path), gates=gates)


def merge_bench_files(files: list[Path], out: Path) -> Path | None:
    """One pytest-benchmark JSON with every preset's benchmarks (machine info from the first)."""
    docs = []
    for f in files:
        if f.is_file():
            try:
                docs.append(json.loads(f.read_text(encoding="utf-8")))
            except json.JSONDecodeError:
                continue  # the failing step already gates the run; its log says why
    if not docs:
        return None
    merged = dict(docs[0])
    # Preset-independent benchmarks (data pipeline, matmul peak) run once per preset under the
    # same name: keep the first measurement so each name appears once.
    seen: set[str] = set()
    merged["benchmarks"] = []
    dropped = 0
    for bench in (b for d in docs for b in d.get("benchmarks", [])):
        name = bench.get("fullname") or bench.get("name")
        if name in seen:
            dropped += 1
            continue
        seen.add(name)
        merged["benchmarks"].append(bench)
    if dropped:
        print(f"merged {len(files)} benchmark files into {out}: {dropped} repeated benchmark(s) kept once", flush=True)
    atomic_write_text(out, json.dumps(merged, indent=2) + "\n")
    return out


def bench_command(plan: RunPlan, preset: str) -> list[str]:
    cmd = [
        plan.python,
        "-m",
        "pytest",
        plan.bench_dir,
        f"--benchmark-json={plan.out / f'bench-{preset}.json'}",
        "--device",
        plan.device,
        "--preset",
        preset,
        "-p",
        "no:cacheprovider",
    ]
    if plan.quick:
        cmd.append("--quick")
    return cmd + list(plan.preset_args.get(preset, ())) + list(plan.bench_args)


def train_command(plan: RunPlan, model: str) -> list[str]:
    return [
        plan.python,
        "-m",
        "gqnbench",
        "train",
        "--model",
        model,
        "--preset",
        plan.train_preset,
        "--steps",
        str(plan.train_steps),
        "--seed",
        str(plan.seed),
        "--out",
        str(plan.out / TRAIN_DIR),
        "--set",
        f"train.device={plan.device}",
        "--no-progress",  # progress bars would fill the CI log with carriage returns
        *plan.train_args,
    ]


def report_command(plan: RunPlan) -> list[str]:
    # Name the inputs instead of the whole folder: the per-preset bench-<preset>.json copies
    # would otherwise be read twice, and nightly's own manifest/verdict are not report inputs.
    inputs = run_inputs(plan.out)
    return [plan.python, "-m", "gqnbench.report", *map(str, inputs), "--out", str(plan.out / "report")]


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _terminate_as_interrupt() -> None:
    """A CI cancel (SIGTERM) stops the running step and records the run, like Ctrl-C does."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def execute(plan: RunPlan, device_name: str, environment: dict[str, Any], host: dict[str, Any]) -> RunState:
    """Run the bench, train and report steps of ``plan``; the caller runs the check."""
    plan.out.mkdir(parents=True, exist_ok=True)
    state = RunState(plan=plan, device_name=device_name, environment=environment, host=host)
    state.write_manifest()
    _terminate_as_interrupt()
    try:
        if "bench" not in plan.skip:
            files = []
            for preset in plan.bench_presets:
                res = run_logged(f"bench-{preset}", bench_command(plan, preset), plan)
                if res.rc == 5:
                    res = res.model_copy(update={"note": "pytest collected no benchmarks"})
                state.steps.append(res)
                state.write_manifest()
                files.append(plan.out / f"bench-{preset}.json")
            merge_bench_files(files, plan.out / BENCH_FILE)
        if "train" not in plan.skip:
            for model in plan.models:
                state.steps.append(run_logged(f"train-{model}", train_command(plan, model), plan))
                state.write_manifest()
        if "report" not in plan.skip:
            if importlib.util.find_spec("gqnbench.report.__main__") is None:
                state.steps.append(StepRecord(name="report", gates=False, note="gqnbench.report has no __main__ yet"))
            elif not (plan.out / BENCH_FILE).exists() and not (plan.out / TRAIN_DIR).exists():
                state.steps.append(StepRecord(name="report", gates=False, note="no results to report"))
            else:
                state.steps.append(run_logged("report", report_command(plan), plan, gates=False))
            state.write_manifest()
    except KeyboardInterrupt:
        state.interrupted = True
        state.steps.append(StepRecord(name="interrupted", rc=130, note="stopped by the user"))
        state.write_manifest()
        raise
    return state
