"""A failure is never a result, and nothing is destroyed before it is replaced (tiny preset, real runs).

A run that failed (an error, a full disk, another writer holding it) or diverged makes its command
exit 1; a main-job stage with a failed run is not done, so running the command again retries the
failed runs only; the report lists failed runs with their error and leaves them out of every
count and figure; the schema refuses impossible states; every numeric ``--set`` value is
range-checked; a checkpoint beyond the requested steps is refused; ``--fresh`` removes the old
run only once the new one has started; no stage rewrites another stage's results; a report
written to a full disk is written whole or not at all.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from gqnbench.cli import main as cli_main
from gqnbench.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from gqnbench.data.generate import generate_dataset
from gqnbench.data.layout import list_shards
from gqnbench.data.tfrecord_io import encode_example, iter_records, parse_example, write_tfrecord
from gqnbench.files import hold_lock
from gqnbench.presets import get_preset
from gqnbench.results import read_result
from gqnbench.schema import SchemaError, validate_doc
from gqnbench.training.data_source import load_training_data
from gqnbench.training.loop import run_lock_path, train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "reports" / "example" / "results"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fail-data") / "root"
    return generate_dataset(root, 24, seed=3, val_fraction=0.25, scenes_per_file=6, workers=1, progress=False)


SETTINGS = {"data.val_scenes": 4, "train.tensorboard": False, "train.eval_every": 2, "train.checkpoint_every": 2}


def _sets(data_root: Path, **extra: object) -> list[str]:
    args = []
    for key, value in {"data.root": str(data_root), **SETTINGS, **extra}.items():
        args += ["--set", f"{key}={value}"]
    return args


def _train_args(data_root: Path, out: Path, steps: int, *extra: str, **overrides: object) -> list[str]:
    head = ["train", "--model", "gqn", "--preset", "tiny", "--steps", str(steps), "--out", str(out), "--tag", "t"]
    return [*head, "--no-progress", *_sets(data_root, **overrides), *extra]


@pytest.fixture(scope="module")
def preset(data_root: Path):
    return get_preset("tiny", {"data.root": str(data_root), **SETTINGS})


@pytest.fixture(scope="module")
def data(preset):
    return load_training_data(preset.data, progress=False)


def _main_job_args(data_root: Path, out: Path, *skip: str, sets: tuple[str, ...] = ("--set", "train.steps=10")) -> list:
    args = ["run", "--preset", "tiny", "--quick", "--data", str(data_root), "--out", str(out)]
    return [*args, "--set", "train.tensorboard=false", *sets, "--skip", "costs", "benchmarks", "profile", *skip]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# -- a failed run makes its command exit 1, is listed with its error, and is retried ------------


def test_sweep_with_a_failing_setting_exits_1_and_lists_it_with_its_error(data_root, tmp_path, capsys) -> None:
    out = tmp_path / "sweep"
    head = ["sweep", "--preset", "tiny", "--models", "gqn", "--field", "model.image_size", "--values", "16", "32"]
    tail = ["--no-progress", *_sets(data_root)]
    args = [*head, "--steps", "2", "--out", str(out), *tail]
    assert cli_main(args) == 1
    printed = capsys.readouterr()
    doc = read_result(out / "sweep_model.image_size.json", "sweep")
    ok, bad = doc["runs"]
    assert ok["status"] == "completed" and bad["status"] == "failed"
    assert "model.image_size=32 but data.image_size=16" in bad["error"]
    assert "model.image_size=32 but data.image_size=16" in printed.err and "1 run(s) failed" in printed.err
    # The failed run counts in no denominator: one run, one failed, the fraction over the run that ran.
    summary = doc["summary"]["gqn"]
    assert summary["runs"] == 1 and summary["failed"] == 1 and summary["fraction_improved"] == float(ok["improved"])
    # Running it again reuses the finished setting and tries the failed one again (it fails again).
    assert cli_main(args) == 1
    again = read_result(out / "sweep_model.image_size.json", "sweep")
    assert again["runs"][0]["skipped"] is True and again["runs"][1]["status"] == "failed"
    # A step count out of range is bad input, refused before any run (not a failed row per run).
    assert cli_main([*head, "--steps", "0", "--out", str(tmp_path / "zero"), *tail]) == 2
    assert "train.steps=0: must be >= 1" in capsys.readouterr().err and not (tmp_path / "zero").exists()


def test_time_to_target_with_a_failed_run_exits_1_and_the_rerun_trains_only_that_run(
    data_root, tmp_path, capsys
) -> None:
    out = tmp_path / "ttt"
    args = ["time-to-target", "--preset", "tiny", "--models", "gqn", "--seeds", "2", "--budget", "4"]
    args += ["--target", "1e9", "--out", str(out), "--no-progress", *_sets(data_root)]
    with hold_lock(run_lock_path(out, "gqn-ttt-seed1"), "a run another process writes", log=lambda _: None):
        assert cli_main(args) == 1
    printed = capsys.readouterr()
    doc = read_result(out / "time_to_target.json", "time_to_target")
    done, failed = doc["runs"]
    assert done["status"] == "completed" and failed["status"] == "failed"
    assert "is being written by another process" in failed["error"] and "gqn seed 1" in printed.err
    # Not a run that missed the target: left out of the medians and the count.
    assert doc["summary"]["gqn"]["total"] == 1 and doc["summary"]["gqn"]["failed"] == 1
    assert doc["summary"]["gqn"]["median_steps"] == done["steps"]
    finished = (out / done["run_file"]).read_bytes()
    assert cli_main(args) == 0
    again = read_result(out / "time_to_target.json", "time_to_target")
    assert [r["status"] for r in again["runs"]] == ["completed", "completed"]
    assert (out / done["run_file"]).read_bytes() == finished  # seed 0 was reused, not trained again


def test_main_job_stage_with_a_failed_run_is_not_done_and_the_rerun_retries_only_that_run(
    data_root, tmp_path, capsys
) -> None:
    out = tmp_path / "job"
    results = out / "results"
    assert cli_main(_main_job_args(data_root, out, "sweep", "samples", "report")) == 0
    # --set train.steps=10 wins over --quick's 40 steps: it is what ran and what the plan records.
    ttt = read_result(results / "time_to_target" / "time_to_target.json", "time_to_target")
    run = read_result(results / "time_to_target" / ttt["runs"][0]["run_file"], "training_run")
    assert ttt["budget"]["steps"] == 10 and run["final"]["step"] == 10 and run["request"]["steps"] == 10
    plan = read_result(results / "mainjob.json", "main_job")["plan"]
    assert plan["budget"]["ttt_budget_steps"] == 10 and plan["budget"]["sweep_steps"] == 10
    ttt_runs = sorted((results / "time_to_target" / "runs").glob("*.json"))
    before = {p: p.read_bytes() for p in ttt_runs}
    capsys.readouterr()

    # Another process writes one of the sweep's runs: that run fails, the others are trained.
    busy = run_lock_path(results / "sweep", "metagqn-sweep-model.z_channels=8-seed0")
    with hold_lock(busy, "a sweep run another process writes", log=lambda _: None):
        assert cli_main(_main_job_args(data_root, out, "samples")) == 1
    printed = capsys.readouterr()
    assert "metagqn" in printed.err and "is being written by another process" in printed.err
    stages = read_result(results / "mainjob.json", "main_job")["stages"]
    assert stages["sweep"]["status"] == "failed" and stages["time_to_target"]["status"] == "done"
    assert stages["report"]["status"] == "done"  # the report is written, and lists the failure
    sweep = read_result(results / "sweep" / "sweep_model.z_channels.json", "sweep")
    assert [r["status"] for r in sweep["runs"]].count("failed") == 1
    assert next(r for r in sweep["runs"] if r["model"] == "gqn" and r["value"] == 2)["reused_main_run"] is True
    # The sweep read the time-to-target run it reuses and wrote nothing of the other stage's.
    assert {p: p.read_bytes() for p in ttt_runs} == before
    failed = _csv(out / "tables" / "failed_runs.csv")
    assert [(r["model"], r["status"]) for r in failed] == [("metagqn", "failed")]
    assert "is being written by another process" in failed[0]["reason"]
    settings = {(r["model"], r["value"]): r for r in _csv(out / "tables" / "robustness_settings.csv")}
    assert settings[("metagqn", "8")]["seeds"] == "0" and settings[("metagqn", "8")]["failed"] == "1"
    summary = {r["model"]: r for r in _csv(out / "tables" / "robustness_summary.csv")}
    assert summary["metagqn"]["runs"] == "1"  # the failed run is in no denominator

    # The same command again: the stage is not "already done"; it trains the failed run only.
    assert cli_main(_main_job_args(data_root, out, "samples")) == 0
    assert "[sweep] already done" not in capsys.readouterr().out
    assert read_result(results / "mainjob.json", "main_job")["stages"]["sweep"]["status"] == "done"
    sweep = read_result(results / "sweep" / "sweep_model.z_channels.json", "sweep")
    rows = {(r["model"], r["value"]): r for r in sweep["runs"]}
    assert all(r["status"] == "completed" for r in rows.values())
    assert not rows[("metagqn", 8)]["skipped"] and rows[("metagqn", 2)]["skipped"] and rows[("gqn", 8)]["skipped"]
    assert {p: p.read_bytes() for p in ttt_runs} == before
    assert not (out / "tables" / "failed_runs.csv").exists()  # the new report has no failure; its table went


def test_run_whose_training_runs_all_diverged_exits_1_and_shows_no_prediction_of_theirs(
    data_root, tmp_path, capsys
) -> None:
    out = tmp_path / "job"
    args = _main_job_args(data_root, out, "sweep", sets=("--set", "train.inject_nan_at_step=3"))
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "gqn seed 0: diverged" in err and "metagqn seed 0: diverged" in err
    samples = read_result(out / "results" / "samples.json", "samples")
    assert all(scene["predictions"] == {} for scene in samples["scenes"])
    assert set(samples["left_out"]) == {"gqn", "metagqn"} and "diverged" in samples["left_out"]["gqn"]
    md = (out / "report.md").read_text()
    assert "not shown" in md and "diverged" in md[md.index('<a id="samples"') :]
    # A rerun reuses the diverged runs (they are finished) and still exits 1.
    assert cli_main(args) == 1


# -- a checkpoint beyond the requested steps is refused, never misreported ----------------------


def test_continuing_with_fewer_steps_than_the_checkpoint_is_refused(preset, data, data_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    stopped = train(preset, "gqn", out, tag="t", steps=8, data=data, stop_at_step=6, progress=False)
    assert stopped.status == "interrupted"
    before = stopped.run_file.read_bytes()
    assert cli_main(_train_args(data_root, out, 4)) == 2
    err = capsys.readouterr().err
    assert "checkpoint at step 6" in err and "--steps 4" in err and "Traceback" not in err
    assert stopped.run_file.read_bytes() == before
    # A finished run continued with --resume and fewer steps: refused the same way.
    assert cli_main(_train_args(data_root, out, 8)) == 0
    assert cli_main(_train_args(data_root, out, 4, "--resume")) == 2
    assert "checkpoint at step 8" in capsys.readouterr().err
    assert read_result(stopped.run_file)["final"]["step"] == 8


# -- every numeric --set value is range-checked --------------------------------------------------

BAD_SETS = [
    ("train.eval_every=0", "train.eval_every=0: must be >= 1"),
    ("train.checkpoint_every=0", "train.checkpoint_every=0: must be >= 1"),
    ("train.log_every=-2", "train.log_every=-2: must be >= 1"),
    ("train.threads=0", "train.threads=0: must be >= 1"),
    ("train.lr_start=-0.001", "train.lr_start=-0.001: must be > 0"),
    ("train.lr_start=nan", "train.lr_start=nan: must be > 0"),
    ("train.adam_beta1=1.0", "train.adam_beta1=1.0: must be >= 0 and < 1"),
    ("train.batch_size=0", "train.batch_size=0: must be >= 1"),
    ("train.seed=-1", "train.seed=-1: must be >= 0"),
    ("data.val_fraction=1.5", "data.val_fraction=1.5: must be > 0 and < 1"),
    ("data.max_context=0", "data.max_context=0: must be >= 1 and <= 14"),
    ("data.val_scenes=0", "data.val_scenes=0: must be >= 1"),
    ("model.sigma_start=0", "model.sigma_start=0: must be > 0"),
    ("gqn.z_channels=0", "gqn.z_channels=0: must be >= 1"),
]


@pytest.mark.parametrize(("setting", "message"), BAD_SETS, ids=[s for s, _ in BAD_SETS])
def test_out_of_range_set_value_is_bad_input_naming_field_and_range(setting, message, tmp_path, capsys) -> None:
    args = ["train", "--model", "gqn", "--preset", "tiny", "--out", str(tmp_path), "--set", setting]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(message) and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_every_numeric_config_field_has_a_range() -> None:
    for cls in (TrainConfig, DataConfig, ModelConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            numeric = {int, float} & set(typing.get_args(hints[f.name]) or (hints[f.name],))
            if numeric and hints[f.name] is not bool:
                assert "range" in f.metadata, f"{cls.__name__}.{f.name} has no range"
    with pytest.raises(ConfigError, match=r"data.max_context=2: must be >= min_context \(3\)"):
        get_preset("tiny", {"data.min_context": 3, "data.max_context": 2})


# -- --fresh removes the old run only once the new one has started ---------------------------------


def _corrupt_copy(data_root: Path, tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "bad-root"
    shutil.copytree(data_root, root, ignore=shutil.ignore_patterns(".gqnbench-cache"))
    shard = list_shards(root, "train")[0]
    records = [payload for _, payload in iter_records(shard)]
    frames, cams = parse_example(records[0], shard, 0)
    cams = cams.copy()
    cams[0, 0] = np.nan
    records[0] = encode_example(frames, cams)
    write_tfrecord(shard, records)
    return root


def test_fresh_keeps_the_old_run_when_the_new_request_fails_before_it_starts(data_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert cli_main(_train_args(data_root, out, 4)) == 0
    files = [out / "runs" / "gqn-t-seed0.json", out / "runs" / "gqn-t-seed0.pt", out / "checkpoints" / "gqn-t-seed0.ckpt"]
    before = {p: p.read_bytes() for p in files}
    bad_root = _corrupt_copy(data_root, tmp_path)
    args = _train_args(data_root, out, 4, "--fresh", **{"data.root": bad_root})
    assert cli_main(args) == 2
    assert "camera x is nan" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in files} == before, "the old run must survive a replacement that never started"
    # A replacement that starts does replace it: new results, new checkpoint, old weights gone until it finishes.
    assert cli_main(_train_args(data_root, out, 2, "--fresh")) == 0
    doc = read_result(files[0], "training_run")
    assert doc["final"]["step"] == 2 and doc["status"] == "completed"
    assert all(p.read_bytes() != before[p] for p in files)


# -- the schema refuses impossible states ------------------------------------------------------------


def _example(path: str) -> dict:
    return json.loads((EXAMPLE / path).read_text())


def _broken_run(**changes: object) -> dict:
    doc = _example("time_to_target/runs/gqn-ttt-seed0.json")
    for key, value in changes.items():
        target = doc
        *parents, last = key.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    return doc


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"status": "bogus"}, "status"),
        ({"final__val_nll": None}, "final"),
        ({"final__val_nll": "inf"}, "final"),
        ({"final__step": None}, "final"),
        ({"final__step": 6000}, "final"),
        ({"status": "diverged", "diverged_step": None}, "diverged_step"),
        ({"status": "failed"}, "error"),
        ({"eval_curve": []}, "eval_curve"),
    ],
    ids=["unknown-status", "completed-nan-nll", "completed-inf-nll", "completed-no-step", "step-beyond-steps",
         "diverged-without-step", "failed-without-error", "completed-without-evaluations"],  # fmt: skip
)
def test_schema_refuses_an_impossible_training_run(changes: dict, field: str) -> None:
    validate_doc("training_run", _example("time_to_target/runs/gqn-ttt-seed0.json"))
    with pytest.raises(SchemaError, match=field):
        validate_doc("training_run", _broken_run(**changes), "run.json")


def test_schema_refuses_impossible_sweep_time_to_target_and_stage_rows() -> None:
    sweep = _example("sweep/sweep_model.z_channels.json")
    for row, field in (
        ({"status": "bogus"}, "status"),
        ({"final_val_nll": None}, "final_val_nll"),
        ({"status": "failed", "error": None}, "error"),
    ):
        bad = {**sweep, "runs": [{**sweep["runs"][0], **row}, *sweep["runs"][1:]]}
        with pytest.raises(SchemaError, match=field):
            validate_doc("sweep", bad)
    ttt = _example("time_to_target/time_to_target.json")
    rows = (({"steps": None}, "steps"), ({"wall_s": "inf"}, "wall_s"), ({"status": "bogus"}, "status"), ({"steps": 6000}, "budget"))
    for row, field in rows:
        bad = {**ttt, "runs": [{**ttt["runs"][0], **row}, *ttt["runs"][1:]]}
        with pytest.raises(SchemaError, match=field):
            validate_doc("time_to_target", bad)
    job = _example("mainjob.json")
    with pytest.raises(SchemaError, match="status"):
        validate_doc("main_job", {**job, "stages": {**job["stages"], "sweep": {"status": "finished-ish"}}})


# -- a full disk: the run says it failed, the command exits 1 in one line, nothing half-written --------

# RLIMIT_FSIZE makes the kernel refuse to grow any file past the limit (EFBIG; Python ignores
# SIGXFSZ): what a full disk does to the first file that does not fit, without a mount.
LIMITED = """
import resource, runpy, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


def _limited(limit: int, module: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", LIMITED, str(limit), module, *args]
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)


def test_training_on_a_full_disk_exits_1_and_its_run_says_failed(data, data_root, tmp_path) -> None:
    out = tmp_path / "run"
    # The run's results file (a few kB) fits; its first checkpoint (about 1 MB) does not.
    done = _limited(200_000, "gqnbench", *_train_args(data_root, out, 4))
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("gqnbench train: failed: [Errno 27] File too large: ") and "gqn-t-seed0.ckpt" in last
    doc = read_result(out / "runs" / "gqn-t-seed0.json", "training_run")
    assert doc["status"] == "failed" and "File too large" in doc["error"] and "gqn-t-seed0.ckpt" in doc["error"]
    assert not list(out.rglob("*.tmp")), "no half-written file is left behind"
    # The disk has room again: the same command retries the run (it is not finished) and completes it.
    assert cli_main(_train_args(data_root, out, 4)) == 0
    assert read_result(out / "runs" / "gqn-t-seed0.json")["status"] == "completed"


def _report(out: Path, limit: int) -> subprocess.CompletedProcess:
    inputs = [str(EXAMPLE / "time_to_target"), str(EXAMPLE / "sweep")]
    return _limited(limit, "gqnbench.report", *inputs, "--out", str(out))


def test_report_to_a_full_disk_fails_in_one_line_and_leaves_the_old_report_whole(tmp_path) -> None:
    out = tmp_path / "report"
    first = _report(out, 1 << 30)
    assert first.returncode == 0, first.stderr
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    html = out / "report.html"
    assert html in written and len(written[html]) > 100_000
    # Every figure and table fits under the limit; the self-contained HTML does not.
    limit = max(len(b) for p, b in written.items() if p != html) + 1000
    assert limit < len(written[html])
    failed = _report(out, limit)
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert str(out) in lines[0] and "File too large" in lines[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written, "nothing half-written, nothing lost"
