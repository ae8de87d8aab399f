"""Ctrl-C and SIGTERM stop a whole command: real ``gqnbench`` subprocesses on the tiny preset, a signal
sent mid-training. Each running run ends with a checkpoint at the step it stopped, the message names the
command that continues, the exit status is 128 + signal, no queued run starts, no process outlives the
command (workers included, even when the command itself is killed with SIGKILL), and running the
command again continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gqnbench.data.generate import generate_dataset
from gqnbench.files import hold_lock
from gqnbench.presets import get_preset
from gqnbench.results import read_result
from gqnbench.training.checkpoint import load_torch
from gqnbench.training.loop import train

psutil = pytest.importorskip("psutil")

STEPS = 300  # long enough that both workers are still training when the signal comes
SEEN = 20  # the signal goes once every running run has evaluated at this step


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("signals-data") / "root"
    generate_dataset(root, 32, seed=4, val_fraction=0.25, scenes_per_file=8, workers=1, progress=False)
    # Evaluations now and then to watch progress; no periodic checkpoint before the end, so a
    # checkpoint found after the signal was written at the stop. One thread everywhere, so the runs
    # in this process (the references) compute exactly what the commands' processes do.
    return {"data.root": str(root), "data.val_scenes": 4, "train.eval_every": SEEN, "train.checkpoint_every": 10_000,
            "train.tensorboard": False, "train.threads": 1}  # fmt: skip


def _set(settings: dict[str, object]) -> list[str]:
    return [f"--set={k}={v}" for k, v in settings.items()]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    """``gqnbench ARGS`` in its own session (a process group the test can signal as a terminal would)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gqnbench", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_until(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 300.0) -> None:
    start = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} too early: {proc.communicate()}")
        assert time.monotonic() - start < timeout, "the runs never got going"
        time.sleep(0.05)


def _evaluated_step(run_file: Path) -> int:
    """The step of a run's last evaluation so far (-1 before its file exists)."""
    try:
        return json.loads(run_file.read_text())["eval_curve"][-1]["step"]
    except (FileNotFoundError, json.JSONDecodeError, IndexError, KeyError):
        return -1


def _descendants(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def _assert_none_left(processes: list[psutil.Process], timeout: float = 10.0) -> None:
    """Every process gone (a zombie that nobody reaps counts as gone: it runs no code and holds no lock)."""
    start = time.monotonic()
    while True:
        alive = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return
        assert time.monotonic() - start < timeout, f"still running: {[(p.pid, p.cmdline()[-3:]) for p in alive]}"
        time.sleep(0.1)


def _checkpoint_step(path: Path) -> int:
    return load_torch(path)["state"]["step"]


def _run_doc(out: Path, name: str) -> dict:
    return read_result(out / "runs" / f"{name}.json", "training_run")


SWEEP = ["--preset", "tiny", "--models", "gqn", "--z-channels", "2", "4", "8", "--steps", str(STEPS)]
RUNNING = ["gqn-sweep-model.z_channels=8-seed0", "gqn-sweep-model.z_channels=4-seed0"]  # largest first
QUEUED = "gqn-sweep-model.z_channels=2-seed0"


def test_ctrl_c_stops_a_sweep_its_workers_and_its_queue_and_the_rerun_continues_each_run(
    settings: dict, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", *SWEEP, "--processes", "2", "--out", str(out), "--no-progress", *_set(settings)]
    proc = _start(argv, tmp_path)
    _wait_until(lambda: all(_evaluated_step(out / "runs" / f"{n}.json") >= SEEN for n in RUNNING), proc)
    workers = _descendants(proc)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    _, err = proc.communicate(timeout=120)
    print(err[-2000:])
    assert proc.returncode == 130
    assert not (out / "runs" / f"{QUEUED}.json").exists()  # the queued run never started
    assert time.monotonic() - sent < 60  # a step and a checkpoint, not the rest of the runs
    _assert_none_left(workers)
    for name in RUNNING:
        doc = _run_doc(out, name)
        assert doc["status"] == "interrupted"
        assert SEEN <= _checkpoint_step(out / "checkpoints" / f"{name}.ckpt") < STEPS
        with hold_lock(out / "runs" / f"{name}.lock", name):  # free: no worker holds it any more
            pass
    assert not list(out.glob("sweep_*.json"))  # no summary of a sweep that did not finish
    assert "interrupted; results and checkpoints written so far are kept. To continue, run:\n  gqnbench sweep" in err

    stopped_at = {name: _checkpoint_step(out / "checkpoints" / f"{name}.ckpt") for name in RUNNING}
    again = subprocess.run([sys.executable, "-m", "gqnbench", *argv], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    for name, step in stopped_at.items():  # each from the step it stopped at (exactly: the train test below)
        assert f"{name}: continuing from the checkpoint at step {step}" in again.stderr
        assert _run_doc(out, name)["resumed_from_step"] == step
    rerun = read_result(out / "sweep_model.z_channels.json", "sweep")
    assert [r["status"] for r in rerun["runs"]] == ["completed"] * 3


def test_sigterm_to_train_checkpoints_and_exits_143_and_the_rerun_continues_exactly(
    settings: dict, tmp_path: Path
) -> None:
    argv = ["train", "--model", "metagqn", "--preset", "tiny", "--steps", str(STEPS), "--tag", "t", "--out", "out"]
    argv += ["--no-progress", *_set(settings)]
    out, name = tmp_path / "out", "metagqn-t-seed0"
    proc = _start(argv, tmp_path)
    _wait_until(lambda: _evaluated_step(out / "runs" / f"{name}.json") >= SEEN, proc)
    proc.send_signal(signal.SIGTERM)  # what Slurm, systemd and docker stop send
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "stopped by SIGTERM; results and checkpoints written so far are kept. To continue, run:\n" in err
    assert "  gqnbench train --model metagqn" in err
    assert _run_doc(out, name)["status"] == "interrupted"
    stopped_at = _checkpoint_step(out / "checkpoints" / f"{name}.ckpt")
    assert SEEN <= stopped_at < STEPS

    again = subprocess.run([sys.executable, "-m", "gqnbench", *argv], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"continuing from the checkpoint at step {stopped_at}" in again.stderr
    resumed = _run_doc(out, name)
    assert resumed["resumed_from_step"] == stopped_at and resumed["status"] == "completed"
    straight = train(get_preset("tiny", settings), "metagqn", tmp_path / "reference", tag="t", steps=STEPS,
                     progress=False).doc  # fmt: skip
    assert [p["val_nll"] for p in resumed["eval_curve"]] == [p["val_nll"] for p in straight["eval_curve"]]


def test_sigterm_to_the_main_job_alone_stops_its_workers_and_starts_nothing_more(tmp_path: Path) -> None:
    # docker stop / kill PID: only the main process gets the signal; its workers must follow.
    out = tmp_path / "report"
    # Heavier steps (tens of ms): the signal comes within the first few, long before the first
    # evaluation could end the run at its target.
    heavier = ["--set=model.hidden_channels=32", "--set=train.batch_size=32"]
    argv = ["run", "--preset", "tiny", "--quick", "--out", str(out), "--cache", str(tmp_path / "cache"), *heavier]
    argv += ["--skip", "costs", "benchmarks", "profile"]
    proc = _start(argv, tmp_path)
    runs = out / "results" / "time_to_target" / "runs"
    _wait_until(lambda: _evaluated_step(runs / "gqn-ttt-seed0.json") >= 0, proc)  # training has begun
    workers = _descendants(proc)
    assert any("spawn_main" in " ".join(p.cmdline()) for p in workers)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "stopped by SIGTERM" in err and "To continue, run:\n  gqnbench run --preset tiny --quick" in err
    _assert_none_left(workers)
    assert read_result(runs / "gqn-ttt-seed0.json")["status"] == "interrupted"
    assert (out / "results" / "time_to_target" / "checkpoints" / "gqn-ttt-seed0.ckpt").is_file()
    with hold_lock(runs / "gqn-ttt-seed0.lock", "the run"):
        pass
    assert not (runs / "metagqn-ttt-seed0.json").exists()  # queued behind it: never started
    assert not (out / "results" / "sweep").exists()  # the next stage never started
    stages = json.loads((out / "results" / "mainjob.json").read_text())["stages"]
    assert "time_to_target" not in stages


def test_workers_of_a_killed_sweep_checkpoint_and_exit(settings: dict, tmp_path: Path) -> None:
    # kill -9 of the command (an OOM killer, a lost terminal): its workers must not train on as orphans.
    out = tmp_path / "sweep"
    argv = ["sweep", *SWEEP, "--processes", "2", "--out", str(out), "--no-progress", *_set(settings)]
    proc = _start(argv, tmp_path)
    _wait_until(lambda: all(_evaluated_step(out / "runs" / f"{n}.json") >= SEEN for n in RUNNING), proc)
    workers = _descendants(proc)
    proc.kill()
    proc.communicate(timeout=60)
    _assert_none_left(workers, timeout=60)
    for name in RUNNING:  # each worker saw its parent go, stopped at a step boundary and checkpointed
        assert _run_doc(out, name)["status"] == "interrupted"
        assert SEEN <= _checkpoint_step(out / "checkpoints" / f"{name}.ckpt") < STEPS
    assert not (out / "runs" / f"{QUEUED}.json").exists()
