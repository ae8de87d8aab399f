"""Issue 11: nothing lost, nothing wrong reported. Reruns over an existing run, failed runs in the
report, bad data, concurrent writers, exit codes and timings taken on a shared machine
(tiny preset, a few steps each)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gqnbench.cli import main as cli_main
from gqnbench.data.errors import RecordFormatError
from gqnbench.data.generate import generate_dataset
from gqnbench.data.info import dataset_info
from gqnbench.data.layout import list_shards
from gqnbench.data.tfrecord_io import encode_example, iter_records, parse_example, read_scenes, write_tfrecord
from gqnbench.files import LOCK_NAME, LockedError, hold_lock
from gqnbench.presets import get_preset
from gqnbench.results import read_result
from gqnbench.training.data_source import load_training_data
from gqnbench.training.loop import RunExistsError, run_lock_path, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rel-data") / "root"
    return generate_dataset(root, 24, seed=3, val_fraction=0.25, scenes_per_file=6, workers=1, progress=False)


def _overrides(root: Path, **extra: object) -> dict[str, object]:
    return {
        "data.root": str(root),
        "data.val_scenes": 4,
        "train.tensorboard": False,
        "train.log_every": 1,
        "train.eval_every": 2,
        "train.checkpoint_every": 2,
        "train.flush_denormal": False,
        **extra,
    }


@pytest.fixture(scope="module")
def preset(data_root: Path):
    return get_preset("tiny", _overrides(data_root))


@pytest.fixture(scope="module")
def data(preset):
    return load_training_data(preset.data, progress=False)


def _cli_args(data_root: Path, out: Path, steps: int, *extra: str, **overrides: object) -> list[str]:
    args = ["train", "--model", "gqn", "--preset", "tiny", "--steps", str(steps), "--out", str(out), "--tag", "tiny", "--no-progress"]
    for key, value in _overrides(data_root, **overrides).items():
        args += ["--set", f"{key}={value}"]
    return [*args, *extra]


def _run_doc(out: Path) -> dict:
    (path,) = (out / "runs").glob("*.json")
    return read_result(path, "training_run")


# -- case 1: re-running a command never throws the run away -----------------------------------


def test_rerun_after_interrupt_continues_instead_of_starting_over(preset, data, data_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    stopped = train(preset, "gqn", out, steps=6, data=data, stop_at_step=4, progress=False)
    assert stopped.status == "interrupted" and stopped.doc["final"]["step"] == 4
    # The same command again, without --resume: it continues from step 4 (it used to restart at 0).
    assert cli_main(_cli_args(data_root, out, 6)) == 0
    doc = _run_doc(out)
    assert doc["status"] == "completed" and doc["final"]["step"] == 6 and doc["resumed_from_step"] == 4
    assert "continuing from the checkpoint at step 4" in capsys.readouterr().err


def test_finished_run_is_reused_or_refused_never_replaced(data_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert cli_main(_cli_args(data_root, out, 8)) == 0
    capsys.readouterr()
    assert cli_main(_cli_args(data_root, out, 8)) == 0  # identical request: reused
    assert "reused" in capsys.readouterr().out
    # A different request over a finished run is refused (it used to replace the 8-step run).
    assert cli_main(_cli_args(data_root, out, 3)) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--fresh" in err and "steps 3 (recorded: 8)" in err
    assert "Traceback" not in err
    assert _run_doc(out)["final"]["step"] == 8
    assert cli_main(_cli_args(data_root, out, 3, "--fresh")) == 0
    assert _run_doc(out)["final"]["step"] == 3


def test_interrupt_message_names_the_command_that_continues(data_root, tmp_path, monkeypatch, capsys) -> None:
    import gqnbench.training.loop as loop

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", ctrl_c)
    args = _cli_args(data_root, tmp_path, 5, "--fresh")
    assert cli_main(args) == 130
    err = capsys.readouterr().err
    assert "To continue, run:" in err
    line = err.strip().splitlines()[-1].strip()
    assert line.startswith("gqnbench train --model gqn") and "--fresh" not in line and "--steps 5" in line


def test_library_default_refuses_to_replace_and_resume_false_starts_over(preset, data, tmp_path) -> None:
    train(preset, "gqn", tmp_path, steps=4, data=data, progress=False)
    with pytest.raises(RunExistsError, match="--fresh"):
        train(preset, "gqn", tmp_path, steps=2, data=data, progress=False)
    assert train(preset, "gqn", tmp_path, steps=2, data=data, progress=False, resume=False).doc["final"]["step"] == 2


# -- case 2: the report never shows a failed run as a result ----------------------------------


def test_report_lists_diverged_and_interrupted_runs_apart(preset, data, tmp_path) -> None:
    from gqnbench.report.build import build_report
    from gqnbench.report.inputs import load_results
    from gqnbench.report.runs import main_runs

    results = tmp_path / "results"
    train(preset, "gqn", results, tag="ok", steps=4, data=data, progress=False)
    nan = get_preset("tiny", _overrides(Path(preset.data.root), **{"train.inject_nan_at_step": 3}))
    diverged = train(nan, "gqn", results, tag="nan", steps=6, data=data, progress=False)
    assert diverged.status == "diverged" and diverged.doc["diverged_step"] == 3
    train(preset, "gqn", results, tag="cut", steps=6, stop_at_step=2, data=data, progress=False)

    loaded = load_results([results])
    runs, how = main_runs(loaded)
    assert [r.doc["tag"] for r in runs] == ["ok"] and "left out" in how
    out = build_report(loaded, tmp_path / "report", strict=True)
    md = out.markdown.read_text()
    assert "Failed and unfinished runs" in md
    failed = (tmp_path / "report" / "tables" / "failed_runs.csv").read_text()
    assert "diverged,3,training loss is nan at step 3" in failed and "interrupted,2" in failed
    table1 = (tmp_path / "report" / "tables").glob("table1*.csv")
    assert not any("seed0" in t.read_text() and "nan" in t.read_text() for t in table1)


# -- case 3: non-finite cameras and bad frames are rejected, data info validates everything ----


def _rewrite_record(shard: Path, index: int = 0, *, cameras=None, frames=None) -> None:
    records = [payload for _, payload in iter_records(shard)]
    old_frames, old_cams = parse_example(records[index], shard, index)
    records[index] = encode_example(
        frames if frames is not None else old_frames, cameras if cameras is not None else old_cams
    )
    write_tfrecord(shard, records)


def _copy_root(data_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    root = tmp_path / "root"
    shutil.copytree(data_root, root, ignore=shutil.ignore_patterns(".gqnbench-cache"))
    return root, list_shards(root, "train")[0]


def test_reader_rejects_a_nan_camera_naming_file_record_and_view(data_root, tmp_path) -> None:
    root, shard = _copy_root(data_root, tmp_path)
    cams = parse_example(next(iter_records(shard))[1], shard, 0)[1].copy()
    cams[7, 3] = np.nan
    _rewrite_record(shard, 1, cameras=cams)
    with pytest.raises(RecordFormatError, match=r"record 1, view 7: camera yaw is nan"):
        list(read_scenes(shard))
    with pytest.raises(RecordFormatError, match="view 7"):
        dataset_info(root)
    assert dataset_info(root, fast=True).splits["train"].scenes == 18  # --fast: framing only


def test_data_info_validates_frames_and_counts_empty_shards(data_root, tmp_path, capsys) -> None:
    root, shard = _copy_root(data_root, tmp_path)
    frames, _ = parse_example(next(iter_records(shard))[1], shard, 0)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="PNG")
    _rewrite_record(shard, frames=[buf.getvalue(), *frames[1:]])
    assert cli_main(["data", "info", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"{shard}, record 0, view 0: frame is not a JPEG" in err and "Traceback" not in err
    assert cli_main(["data", "info", str(root), "--fast"]) == 0
    capsys.readouterr()

    root2, shard2 = _copy_root(data_root, tmp_path / "two")
    shard2.write_bytes(b"")  # a zero-byte shard first: counts and the frame size must still be right
    info = dataset_info(root2)
    assert info.splits["train"].scenes == 12 and info.splits["train"].empty_files == (shard2.name,)
    assert info.image_size == 64 and info.views == 15
    assert cli_main(["data", "info", str(root2)]) == 0
    assert "1 empty file(s)" in capsys.readouterr().out


def test_nan_camera_is_bad_input_not_a_diverged_model(data_root, tmp_path, capsys) -> None:
    root, shard = _copy_root(data_root, tmp_path)
    cams = parse_example(next(iter_records(shard))[1], shard, 0)[1].copy()
    cams[0, 0] = np.inf
    _rewrite_record(shard, cameras=cams)
    args = _cli_args(root, tmp_path / "out", 3)
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "record 0, view 0: camera x is inf" in err and "Traceback" not in err


# -- case 4: one writer per run or output folder; timings on a shared machine are flagged -------


def test_two_concurrent_writers_one_succeeds_one_gets_a_clear_error(data_root, tmp_path) -> None:
    out = tmp_path / "shared"
    args = _cli_args(data_root, out, 400, **{"train.eval_every": 1000, "train.checkpoint_every": 1000})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gqnbench", *args]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "runs").glob("*.lock")):
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    out1, err1 = first.communicate(timeout=300)
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 2], (err1, second.stderr)
    assert first.returncode == 0 and "completed" in out1
    assert "is being written by another process, pid" in second.stderr and str(first.pid) in second.stderr
    assert "Traceback" not in second.stderr
    assert _run_doc(out)["final"]["step"] == 400
    assert not list((out / "runs").glob("*.lock")), "the lock file is removed after a clean finish"


def test_stale_lock_of_a_dead_process_is_taken_over(preset, data, tmp_path, capsys) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = run_lock_path(tmp_path, "gqn-tiny-seed0")
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": "here", "command": "gqnbench train (killed)"}))
    assert train(preset, "gqn", tmp_path, steps=2, data=data, progress=False).status == "completed"
    err = capsys.readouterr().err
    assert f"taking over run gqn-tiny-seed0 in {tmp_path}: its lock was left by pid {dead.stdout.strip()}" in err
    assert "no longer running" in err


def test_main_job_output_folder_has_one_owner_and_refuses_another_plan(tmp_path) -> None:
    from gqnbench.mainjob import STAGES, MainJob

    out = tmp_path / "report"
    skip = tuple(s for s in STAGES if s != "report")
    with hold_lock(out / LOCK_NAME, "output folder"):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            MainJob(preset="tiny", out=out, skip=skip).run(log=lambda _: None)
    MainJob(preset="tiny", out=out, skip=skip).run(log=lambda _: None)
    stage = read_result(out / "results" / "mainjob.json", "main_job")["stages"]["report"]
    assert {"before", "after", "concurrent"} <= set(stage["load"])
    with pytest.raises(ValueError, match="another plan.*--fresh"):
        MainJob(preset="tiny", out=out, quick=True, skip=skip).run(log=lambda _: None)
    MainJob(preset="tiny", out=out, quick=True, skip=skip, fresh=True).run(log=lambda _: None)


def test_timings_taken_beside_another_gqnbench_process_are_flagged(preset, data, tmp_path) -> None:
    from gqnbench.report.build import build_report
    from gqnbench.report.inputs import load_results

    fake = tmp_path / "bin" / "gqnbench"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nsleep 60\nexit 0\n")  # not a tail call: sh stays the process
    fake.chmod(0o755)
    # Started in the background by a shell that exits: like a command from another terminal, it is
    # neither our child nor in our process group.
    started = subprocess.run(
        ["/bin/sh", "-c", f"/bin/sh {fake} >/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True,
        start_new_session=True,
    )
    other_pid = int(started.stdout)
    try:
        result = train(preset, "gqn", tmp_path / "results", steps=2, data=data, progress=False)
    finally:
        os.kill(other_pid, 9)
    doc = result.doc
    assert doc["concurrent"] is True
    assert other_pid in [p["pid"] for p in doc["machine_load"]["other_gqnbench"]]
    build_report(load_results([tmp_path / "results"]), tmp_path / "report", strict=True)
    shared = (tmp_path / "report" / "tables" / "concurrent_timings.csv").read_text()
    assert "training run gqn seed 0" in shared and str(other_pid) in shared


# -- case 5: exit codes and no traceback for a user error --------------------------------------


def test_exit_codes_and_user_errors(data_root, tmp_path, capsys) -> None:
    assert cli_main(_cli_args(data_root, tmp_path / "a", 0)) == 2
    assert "train.steps=0: must be >= 1" in capsys.readouterr().err
    assert cli_main(_cli_args(data_root, tmp_path / "a", -5)) == 2
    assert cli_main(_cli_args(data_root, tmp_path / "a", 2, "--resume", "--fresh")) == 2
    assert "not both" in capsys.readouterr().err
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert cli_main(_cli_args(data_root, not_a_folder, 2)) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    with pytest.raises(OSError):
        cli_main(["--debug", *_cli_args(data_root, not_a_folder, 2)])
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    help_text = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"  {code}" in help_text


# -- case 6: a diverged run exits 1 and names one step -----------------------------------------


def test_diverged_run_exits_1_with_one_step_number(data_root, tmp_path, capsys) -> None:
    args = _cli_args(data_root, tmp_path, 8, **{"train.inject_nan_at_step": 5})
    assert cli_main(args) == 1
    out = capsys.readouterr().out
    assert "gqn: diverged at step 5: training loss is nan at step 5" in out
    assert "last evaluation (step 4)" in out


def test_image_size_mismatch_is_a_clear_error_and_cache_dir_is_honoured(data_root, tmp_path, capsys) -> None:
    args = _cli_args(data_root, tmp_path / "a", 2, **{"model.image_size": 32})
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "model.image_size=32 but data.image_size=16" in err and "Traceback" not in err
    cache = tmp_path / "decoded"
    assert cli_main(_cli_args(data_root, tmp_path / "b", 2, **{"data.cache_dir": str(cache)})) == 0
    assert list(cache.glob("train-16px.*")), "data.cache_dir is where the decoded frames go"


def test_sweep_setting_medians_leave_out_diverged_runs(tmp_path) -> None:
    from gqnbench.report.inputs import load_results
    from gqnbench.report.sections.robustness import settings_frame
    from gqnbench.results import write_result

    def row(seed: int, nll: float, diverged: bool) -> dict:
        return {"model": "gqn", "value": 3, "seed": seed, "final_val_nll": nll, "best_val_nll": nll,
                "final_mse_ratio": 1.0, "final_fg_ratio": 1.0, "learned": False, "diverged": diverged,
                "diverged_step": 5 if diverged else None, "status": "diverged" if diverged else "completed"}  # fmt: skip

    runs = [row(0, 700.0, False), row(1, 710.0, False), row(2, 5000.0, True)]
    write_result(tmp_path / "sweep.json", "sweep", {"field": "model.z_channels", "values": [3], "runs": runs, "summary": {}})
    (setting,) = settings_frame(load_results([tmp_path])).to_dict("records")
    assert setting["final_val_nll_median"] == 705.0 and setting["diverged"] == 1 and setting["seeds"] == 3
