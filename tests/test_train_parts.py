"""The training loop's parts, each on its own: schedule, divergence checks, interruption, the
resume decision, the run state and clock, logging, checkpoint contents and one session update."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from gqnbench.models import build_model
from gqnbench.presets import get_preset
from gqnbench.step import build_step
from gqnbench.training import distributed as D
from gqnbench.training.checkpoint import load_torch, restore_run_checkpoint, save_run_checkpoint
from gqnbench.training.divergence import inject_nan, loss_divergence, nll_divergence
from gqnbench.training.interrupt import InterruptFlag
from gqnbench.training.run_files import RunExistsError, RunPaths, TrainResult, existing_run
from gqnbench.training.run_log import RunLog
from gqnbench.training.run_state import RunState, WallClock
from gqnbench.training.schedule import Schedule


def test_schedule_logs_evaluates_checkpoints_and_stops_as_configured() -> None:
    s = Schedule(steps=10, log_every=4, eval_every=5, checkpoint_every=3, max_seconds=60.0, stop_at_step=7)
    assert [t for t in range(10) if s.logs(t)] == [0, 4, 8, 9]  # every 4th update and the last
    assert [d for d in range(1, 11) if s.evaluates(d, wall_s=0.0)] == [5, 10]
    assert s.evaluates(3, wall_s=60.0) and not s.evaluates(3, wall_s=59.9)  # the time budget
    assert [d for d in range(1, 11) if s.checkpoints(d, stopping=False)] == [3, 6, 9]
    assert s.checkpoints(4, stopping=True)
    assert [d for d in range(1, 11) if s.stops_early(d, False)] == [7, 8, 9, 10]
    assert s.stops_early(1, True)  # a Ctrl-C on any rank
    no_budget = Schedule.of(get_preset("tiny").train)
    assert not no_budget.over_time(1e9) and not no_budget.stops_early(10**6, False)


def test_divergence_checks() -> None:
    loss = torch.tensor(2.0)
    assert inject_nan(loss, 3, None) is loss and inject_nan(loss, 3, 4) is loss
    assert torch.isnan(inject_nan(loss, 4, 4))
    assert loss_divergence(2.0, 5) is None
    assert loss_divergence(float("nan"), 5) == "training loss is nan at step 5"
    assert "inf" in loss_divergence(float("inf"), 0)
    assert nll_divergence(100.0, blowup=1e7) is None and nll_divergence(1e7, blowup=1e7) is None
    assert "above nll_blowup=1e+07" in nll_divergence(2e7, blowup=1e7)
    assert "non-finite" in nll_divergence(float("nan"), blowup=1e7)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_first_ctrl_c_asks_to_stop_the_second_interrupts_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    with InterruptFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_callback_raising_is_at_a_step_boundary_a_normal_return_is_not_after() -> None:
    flag = InterruptFlag()
    seen = []
    flag.call_at_boundary(lambda step: seen.append((step, flag.at_boundary)), 3)
    assert seen == [(3, True)] and not flag.at_boundary

    def stop(step: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        flag.call_at_boundary(stop, 4)
    assert flag.at_boundary  # the handler checkpoints: the state is consistent


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """A real finished two-step run: its out dir, config and request."""
    from gqnbench.data.generate import generate_dataset
    from gqnbench.training.loop import train
    from gqnbench.training.run_files import run_config

    root = generate_dataset(
        tmp_path_factory.mktemp("parts") / "root",
        16,
        seed=2,
        val_fraction=0.25,
        scenes_per_file=8,
        workers=1,
        progress=False,
    )
    preset = get_preset("tiny", {"data.root": str(root), "data.val_scenes": 4, "train.tensorboard": False})
    out = tmp_path_factory.mktemp("parts-run")
    train(preset, "gqn", out, steps=2, progress=False)
    config = run_config(dataclasses.replace(preset, train=dataclasses.replace(preset.train, steps=2)), "gqn")
    return out, config, {"steps": 2, "target_nll": None, "max_seconds": None}


def test_existing_run_decides_reuse_continue_or_refuse(finished_run, tmp_path: Path) -> None:
    out, config, request = finished_run
    paths = RunPaths(tmp_path, "gqn-tiny-seed0")
    assert existing_run(paths, config, request, None) is False  # nothing there: a new run
    assert existing_run(paths, config, request, True) is True
    paths.checkpoint.parent.mkdir(parents=True)
    paths.checkpoint.write_bytes(b"x")
    assert existing_run(paths, config, request, None) is True  # unfinished: continue
    # Starting over removes nothing yet: the new run replaces the old files once it has started.
    assert existing_run(paths, config, request, False) is False and paths.checkpoint.exists()

    done = RunPaths(out, "gqn-tiny-seed0")
    reused = existing_run(done, config, request, None)
    assert isinstance(reused, TrainResult) and reused.skipped and reused.status == "completed"
    more = {**request, "steps": 4}
    with pytest.raises(RunExistsError, match=r"steps 4 \(recorded: 2\).*--fresh"):
        existing_run(done, config, more, None)
    assert existing_run(done, config, more, True) is True  # --resume continues it
    assert done.checkpoint.is_file()


def test_run_state_and_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    st = RunState()
    st.count_update(0.5)
    st.count_update(0.25)
    assert (st.step, st.train_s, st.first_step_s) == (2, 0.75, 0.5)
    st.diverge(1, "why")
    assert (st.running, st.status, st.stop_reason, st.diverged_step, st.diverged_reason) == (
        False,
        "diverged",
        "diverged",
        1,
        "why",
    )
    now = iter([100.0, 103.0, 110.0])
    monkeypatch.setattr("gqnbench.training.run_state.time.perf_counter", lambda: next(now))
    clock = WallClock(base_s=20.0)  # resumed at 20 s of training
    assert clock.now() == 23.0
    clock.exclude(4.0)  # a checkpoint write
    assert clock.now() == 26.0


class _Writer:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, key: str, value: float, step: int) -> None:
        self.scalars.append((key, value, step))


def test_run_log_appends_curve_points_and_tensorboard_scalars() -> None:
    st = RunState(step=3, train_s=1.5)
    log = RunLog("run", total=10, st=st, tensorboard=None, resumed=False, show=False)
    log.writer = _Writer()
    record = {"step": 2, "wall_s": 1.0, "loss": 5.0, "reconstruction": 4.0, "kl": 1.0, "lr": 1e-3, "sigma": 2.0}
    log.train_point(st, record)
    log.eval_point(3, {"z_sampled": {"val_nll": 7.0}})
    assert st.train_curve == [record]
    assert log.writer.scalars == [
        ("train/loss", 5.0, 2),
        ("train/reconstruction", 4.0, 2),
        ("train/kl", 1.0, 2),
        ("train/lr", 1e-3, 2),
        ("train/sigma", 2.0, 2),
        ("perf/steps_per_s", 2.0, 2),
        ("val_z_sampled/nll", 7.0, 3),
    ]
    log.writer = None
    log.close()


def _tiny_step(seed: int = 0):
    preset = get_preset("tiny")
    torch.manual_seed(seed)
    model = build_model("metagqn", preset.model_config("metagqn"))
    return build_step(model, preset.train, torch.device("cpu")), preset


def test_checkpoint_saves_and_restores_model_optimizer_scaler_rng_and_state(tmp_path: Path) -> None:
    from gqnbench.data.episode import Episode

    step, preset = _tiny_step()
    episode = Episode.random(
        2, preset.model_config("metagqn").image_size, 3, generator=torch.Generator().manual_seed(0)
    )
    step.train_step(episode, 0)
    path = tmp_path / "run.ckpt"
    save_run_checkpoint(path, "metagqn", {"train": {}}, {"step": 1}, step, D.SINGLE)
    expected_next = step.train_step(episode, 1).loss.item()  # draws z noise after the checkpoint
    expected = {k: v.clone() for k, v in step.model.state_dict().items()}

    fresh, _ = _tiny_step(seed=1)  # other weights, no optimizer state, another RNG position
    torch.manual_seed(123)
    state = restore_run_checkpoint(load_torch(path), fresh, D.SINGLE)
    assert state == {"step": 1}
    assert fresh.train_step(episode, 1).loss.item() == expected_next
    assert all(torch.equal(v, expected[k]) for k, v in fresh.model.state_dict().items())


def test_update_stops_a_diverged_loss_before_it_reaches_the_weights(tmp_path: Path) -> None:
    from gqnbench.data.episode import Episode
    from gqnbench.training.session import Session

    step, preset = _tiny_step()
    step.train = dataclasses.replace(preset.train, inject_nan_at_step=0)
    record = type("Record", (), {"cfg": step.train})()
    session = Session(step, RunState(), Schedule.of(step.train), record, None, None, preset.data, D.SINGLE)
    before = {k: v.clone() for k, v in step.model.state_dict().items()}
    episode = Episode.random(
        2, preset.model_config("metagqn").image_size, 3, generator=torch.Generator().manual_seed(0)
    )
    out, stop = session.update(iter([episode]), InterruptFlag())
    assert out is None and not stop
    assert session.st.status == "diverged" and session.st.diverged_step == 0 and session.st.step == 0
    assert all(torch.equal(v, before[k]) for k, v in step.model.state_dict().items())
