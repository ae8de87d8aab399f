"""Runs as cluster jobs (gqnbench.training.executors) with submitit's local executor: no Slurm needed.

Each job is a background process on this machine, exactly as a Slurm job would run the run:
results equal the in-process runs', a killed job resubmitted resumes from its checkpoint, a
preempted one checkpoints and requeues itself, and re-running the submitting command collects
what finished without submitting anything. The sbatch script for a 2-GPU run is checked as text.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit")
psutil = pytest.importorskip("psutil")

from gqnbench.data.generate import generate_dataset  # noqa: E402
from gqnbench.results import read_result  # noqa: E402
from gqnbench.training.executors import (  # noqa: E402
    REGISTRY_FILE,
    ClusterExecutor,
    RunsUnfinished,
    executor_from_args,
    parse_minutes,
)
from gqnbench.training.sweep import run_sweep  # noqa: E402
from gqnbench.training.time_to_target import run_time_to_target  # noqa: E402

LOCAL_JOBS = {"cluster": "local", "gpus_per_run": 0, "threads": 1, "poll_s": 0.2, "log": lambda _m: None}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("cluster-data") / "root"
    generate_dataset(root, 48, seed=5, val_fraction=0.25, scenes_per_file=12, workers=1, progress=False)
    return {"data.root": str(root), "data.val_scenes": 8, "train.tensorboard": False, "train.eval_every": 5}


SWEEP = ("tiny", ["metagqn"], "model.z_channels", [2, 4, 8])


@pytest.fixture(scope="module")
def sweeps(base: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("cluster-sweep")
    kw = {"seeds": 1, "steps": 10, "overrides": base, "progress": False}
    local = read_result(run_sweep(*SWEEP, out_dir=out / "local", isolate=False, **kw), "sweep")
    jobs = ClusterExecutor(**LOCAL_JOBS, wait=True)
    cluster = read_result(run_sweep(*SWEEP, out_dir=out / "jobs", executor=jobs, **kw), "sweep")
    return {"out": out / "jobs", "kw": kw, "local": local, "cluster": cluster}


def _nlls(doc: dict) -> list[float]:
    return [r["final_val_nll"] for r in doc["runs"]]


def test_sweep_of_three_settings_runs_as_three_jobs_equal_to_local(sweeps: dict) -> None:
    local, cluster, out = sweeps["local"], sweeps["cluster"], sweeps["out"]
    registry = json.loads((out / REGISTRY_FILE).read_text())["jobs"]
    assert len(registry) == 3 and len({e["job_id"] for e in registry.values()}) == 3
    assert sorted(e["label"] for e in registry.values()) == [
        f"metagqn-sweep-model.z_channels={z}-seed0" for z in SWEEP[3]
    ]
    assert [r["value"] for r in cluster["runs"]] == [2, 4, 8]
    assert _nlls(cluster) == _nlls(local)  # exactly: same runs, other processes
    assert [r["best_val_nll"] for r in cluster["runs"]] == [r["best_val_nll"] for r in local["runs"]]
    assert cluster["summary"] == local["summary"] and cluster["summary"]["metagqn"]["unfinished"] == 0
    assert cluster["unfinished_runs"] == []
    for r in cluster["runs"]:  # each job wrote its own training_run file in the shared output folder
        assert read_result(out / r["run_file"], "training_run")["status"] == "completed"


def test_rerunning_the_submitting_command_builds_the_summary_without_submitting(
    sweeps: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = sweeps["out"]
    before = (out / REGISTRY_FILE).read_text()

    def no_submission(self: ClusterExecutor, folder: Path) -> None:
        raise AssertionError("nothing should be submitted")

    monkeypatch.setattr(ClusterExecutor, "_make_executor", no_submission)
    messages: list[str] = []
    again = read_result(
        run_sweep(
            *SWEEP, out_dir=out, executor=ClusterExecutor(**{**LOCAL_JOBS, "log": messages.append}), **sweeps["kw"]
        ),
        "sweep",
    )
    assert (out / REGISTRY_FILE).read_text() == before
    assert _nlls(again) == _nlls(sweeps["cluster"]) and again["summary"] == sweeps["cluster"]["summary"]
    assert messages == ["sweep model.z_channels: 3 submitit-local job(s): 3 finished"]


def _job_processes(out: Path) -> list[psutil.Process]:
    """The job's controller (its pid is the job id) and its task processes."""
    (entry,) = json.loads((out / REGISTRY_FILE).read_text())["jobs"].values()
    controller = psutil.Process(int(entry["job_id"]))
    return [controller, *controller.children(recursive=True)]


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    start = time.monotonic()
    while not path.exists():
        assert time.monotonic() - start < timeout, f"{path} never appeared"
        time.sleep(0.05)


TTT = {"models": ["gqn"], "target_nll": 1e9, "seeds": [0], "budget_steps": 200, "stop_at_target": False}


@pytest.fixture(scope="module")
def uninterrupted(base: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("ttt-local")
    over = {**base, "train.eval_every": 50, "train.checkpoint_every": 10}
    run_time_to_target("tiny", **TTT, out_dir=out, overrides=over, isolate=False, progress=False)
    return {"overrides": over, "doc": read_result(out / "runs" / "gqn-ttt-seed0.json", "training_run")}


def test_killed_job_resubmitted_resumes_from_its_checkpoint(uninterrupted: dict, tmp_path: Path) -> None:
    kw = {**TTT, "out_dir": tmp_path, "overrides": uninterrupted["overrides"], "progress": False}
    with pytest.raises(RunsUnfinished):
        run_time_to_target("tiny", **kw, executor=ClusterExecutor(**LOCAL_JOBS))  # submit, do not wait
    _wait_for(tmp_path / "checkpoints" / "gqn-ttt-seed0.ckpt")
    procs = _job_processes(tmp_path)
    for proc in reversed(procs):  # kill -9 mid-run, like a node failure
        proc.kill()
    psutil.wait_procs(procs, timeout=10)
    run_doc = read_result(tmp_path / "runs" / "gqn-ttt-seed0.json", "training_run")
    assert run_doc["status"] == "running"  # killed before it finished

    # Run again: the job is reported failed, the summary shows it unfinished, nothing is resubmitted.
    with pytest.raises(RunsUnfinished) as info:
        run_time_to_target("tiny", **kw, executor=ClusterExecutor(**LOCAL_JOBS))
    assert info.value.counts["failed"] == 1 and info.value.counts["finished"] == 0
    partial = read_result(tmp_path / "time_to_target.json", "time_to_target")
    assert partial["runs"] == [] and partial["summary"]["gqn"]["unfinished"] == 1
    (row,) = partial["unfinished_runs"]
    assert row["model"] == "gqn" and row["seed"] == 0 and row["state"] == "failed" and "killed" in row["error"]

    # Only on request is it resubmitted; it continues from the checkpoint and ends where an uninterrupted run does.
    path = run_time_to_target("tiny", **kw, executor=ClusterExecutor(**LOCAL_JOBS, wait=True, resubmit_failed=True))
    doc = read_result(path, "time_to_target")
    assert doc["unfinished_runs"] == [] and doc["summary"]["gqn"]["total"] == 1
    run_doc = read_result(tmp_path / "runs" / "gqn-ttt-seed0.json", "training_run")
    assert run_doc["status"] == "completed" and run_doc["resumed_from_step"] > 0
    assert run_doc["final"]["val_nll"] == uninterrupted["doc"]["final"]["val_nll"]
    assert [p["val_nll"] for p in run_doc["eval_curve"]] == [p["val_nll"] for p in uninterrupted["doc"]["eval_curve"]]
    (entry,) = json.loads((tmp_path / REGISTRY_FILE).read_text())["jobs"].values()
    assert len(entry["earlier_job_ids"]) == 1


def test_preempted_job_checkpoints_and_requeues_itself(uninterrupted: dict, tmp_path: Path) -> None:
    # No periodic checkpoint before the end: the one it resumes from is written when the signal arrives.
    over = {**uninterrupted["overrides"], "train.checkpoint_every": 1000}
    kw = {**TTT, "out_dir": tmp_path, "overrides": over, "progress": False}
    with pytest.raises(RunsUnfinished):
        run_time_to_target("tiny", **kw, executor=ClusterExecutor(**LOCAL_JOBS))
    run_file = tmp_path / "runs" / "gqn-ttt-seed0.json"
    start = time.monotonic()
    while not (run_file.exists() and len(read_result(run_file)["eval_curve"]) >= 2):  # past step 50
        assert time.monotonic() - start < 60
        time.sleep(0.05)
    task = _job_processes(tmp_path)[-1]
    os.kill(task.pid, signal.SIGUSR2)  # what Slurm sends before preempting or at the time limit
    path = run_time_to_target("tiny", **kw, executor=ClusterExecutor(**LOCAL_JOBS, wait=True))
    assert read_result(path, "time_to_target")["summary"]["gqn"]["total"] == 1
    run_doc = read_result(run_file, "training_run")
    assert run_doc["status"] == "completed" and 50 <= run_doc["resumed_from_step"] < 200
    assert run_doc["final"]["val_nll"] == uninterrupted["doc"]["final"]["val_nll"]
    (entry,) = json.loads((tmp_path / REGISTRY_FILE).read_text())["jobs"].values()
    assert entry["earlier_job_ids"] == []  # requeued within the same job, not resubmitted
    log = next((tmp_path / "submitit").glob("*/*_0_log.out")).read_text()
    assert "Calling checkpoint method" in log and "Requeued job" in log


def test_sbatch_script_of_a_two_gpu_run() -> None:
    ex = ClusterExecutor(
        partition="gpu",
        gpus_per_run=2,
        time_limit_min=parse_minutes("4h"),
        account="vision",
        cpus_per_task=8,
        sbatch_flags=("--qos=high", "--constraint=h100"),
        setup=("module load cuda/12.4",),
    )
    script = ex.sbatch_script("/shared/out/submitit", job_name="gqnbench-gqn-ttt-seed0", python="python")
    print(script)  # shown with pytest -s
    lines = script.splitlines()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2",  # one task (DDP rank) per GPU
        "#SBATCH --nodes=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=240",
        "#SBATCH --account=vision",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=h100",
        "#SBATCH --signal=USR2@120",  # the checkpoint-and-requeue signal, 2 minutes before the end
        "#SBATCH --requeue",
        "#SBATCH --job-name=gqnbench-gqn-ttt-seed0",
        "#SBATCH --output=/shared/out/submitit/%j/%j_0_log.out",
        "module load cuda/12.4",
    ):
        assert line in lines, line
    assert lines[-1].startswith("srun --unbuffered") and lines[-1].endswith(
        "python -u -m submitit.core._submit /shared/out/submitit/%j"
    )


def test_executor_options_from_the_command_line() -> None:
    from gqnbench.cli import build_parser

    args = build_parser().parse_args(
        ["sweep", "--z-channels", "3", "32", "--executor", "slurm", "--partition", "gpu", "--gpus-per-run", "2",
         "--time-limit", "1-12:00:00", "--account", "vision", "--sbatch=--qos=high", "--resubmit-failed"]
    )  # fmt: skip
    ex = executor_from_args(args, check=False)  # parsing only: no sbatch --test-only
    assert (ex.cluster, ex.partition, ex.gpus_per_run, ex.time_limit_min, ex.account) == (
        "slurm",
        "gpu",
        2,
        2160,
        "vision",
    )
    assert ex.sbatch_flags == ("--qos=high",) and ex.resubmit_failed and not ex.wait
    assert executor_from_args(build_parser().parse_args(["sweep", "--z-channels", "3"])) is None
    with pytest.raises(ValueError, match="time limit"):
        parse_minutes("soon")


def test_without_submitit_the_slurm_executor_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from gqnbench.cli import build_parser

    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    args = build_parser().parse_args(["sweep", "--z-channels", "3", "--executor", "slurm"])
    with pytest.raises(ValueError, match=r'pip install "gqnbench\[cluster\]"'):
        executor_from_args(args)


def test_two_rank_run_inside_one_job_uses_ddp(base: dict, sweeps: dict, tmp_path: Path) -> None:
    """tasks_per_run=2 (what gpus_per_run=2 gives on Slurm): the run trains with DDP (gloo here) in one job."""
    jobs = ClusterExecutor(**{**LOCAL_JOBS, "tasks_per_run": 2}, wait=True)
    doc = read_result(
        run_sweep("tiny", ["metagqn"], "model.z_channels", [2], out_dir=tmp_path, executor=jobs, **sweeps["kw"]),
        "sweep",
    )
    (row,) = doc["runs"]
    run_doc = read_result(tmp_path / row["run_file"], "training_run")
    assert run_doc["status"] == "completed" and run_doc["world_size"] == 2
    assert run_doc["environment"]["distributed_backend"] == "gloo"
    # Two ranks x half the batch train on the same scenes as one process: the same curve up to float sums.
    assert row["final_val_nll"] == pytest.approx(sweeps["local"]["runs"][0]["final_val_nll"], rel=1e-4)


@pytest.mark.slow  # six jobs sharing two cores
def test_main_job_submits_both_training_stages_then_collects_them(base: dict, tmp_path: Path) -> None:
    from gqnbench.mainjob import MainJob

    cache = tmp_path / "cache"
    kw = {"preset": "tiny", "out": tmp_path / "report", "quick": True, "cache_root": cache}
    kw["skip"] = ("costs", "benchmarks", "profile", "samples", "report")
    with pytest.raises(RunsUnfinished):
        MainJob(**kw, executor=ClusterExecutor(**LOCAL_JOBS)).run(log=lambda _: None)
    results = tmp_path / "report" / "results"
    # Both training stages submitted before the job stopped to wait for them.
    assert (results / "time_to_target" / REGISTRY_FILE).is_file() and (results / "sweep" / REGISTRY_FILE).is_file()
    MainJob(**kw, executor=ClusterExecutor(**LOCAL_JOBS, wait=True)).run(log=lambda _: None)
    stages = json.loads((results / "mainjob.json").read_text())["stages"]
    assert {k for k, v in stages.items() if v["status"] == "done"} == {"data", "time_to_target", "sweep"}
    ttt = read_result(results / "time_to_target" / "time_to_target.json", "time_to_target")
    assert {r["model"] for r in ttt["runs"]} == {"gqn", "metagqn"} and ttt["unfinished_runs"] == []
    # The sweep's job for gqn at its default z reuses gqn-ttt-seed0: it waited for the job training
    # that run instead of running beside it into the run's lock.
    sweep = read_result(results / "sweep" / "sweep_model.z_channels.json", "sweep")
    assert sweep["unfinished_runs"] == [] and {r["status"] for r in sweep["runs"]} == {"completed"}
    assert [r["value"] for r in sweep["runs"] if r["reused_main_run"]] == [2]


def test_sweep_command_submits_exits_and_collects_when_run_again(
    base: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from gqnbench.cli import main

    argv = ["sweep", "--preset", "tiny", "--models", "metagqn", "--z-channels", "2", "--steps", "10"]
    argv += [f"--set={k}={v}" for k, v in base.items()] + ["--out", str(tmp_path), "--no-progress"]
    argv += ["--executor", "submitit-local"]
    assert main(argv) == 3  # submitted; the command does not wait unless asked
    first = capsys.readouterr().out
    assert "submitted 1 submitit-local job(s)" in first and "not finished yet" in first
    assert "metagqn value 2 seed 0: " in first  # the unfinished run, with its job state
    assert main([*argv, "--wait"]) == 0
    out = capsys.readouterr().out
    assert "submitted" not in out and "1 submitit-local job(s): 1 finished" in out
    assert "metagqn 2 seed 0: final val NLL" in out


def test_wait_looks_again_soon_then_less_often(sweeps: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gqnbench.training import executors

    naps: list[float] = []
    sleep = time.sleep

    def timed_sleep(seconds: float) -> None:
        if sys._getframe(1).f_code.co_name == "_poll":  # the executor's waits between two looks
            naps.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(executors.time, "sleep", timed_sleep)
    jobs = ClusterExecutor(**{**LOCAL_JOBS, "poll_s": 0.2, "poll_max_s": 1.0}, wait=True)
    run_sweep("tiny", ["metagqn"], "model.z_channels", [2], out_dir=tmp_path, executor=jobs, **sweeps["kw"])
    assert naps[:4] == pytest.approx([0.2, 0.3, 0.45, 0.675])  # the job is running all along: no reset
    assert max(naps) == 1.0 and naps[-1] == 1.0  # a job that takes seconds is looked at once a second


def test_a_run_that_cannot_be_trained_fails_its_job(sweeps: dict, tmp_path: Path) -> None:
    from gqnbench.files import hold_lock

    # Another process writes the run (here: this one holds its lock): the job cannot train it, so
    # the job fails, rather than finishing with a "failed" row that looks like a result.
    with hold_lock(tmp_path / "runs" / "metagqn-sweep-model.z_channels=2-seed0.lock", "the run"):
        with pytest.raises(RunsUnfinished) as info:
            run_sweep("tiny", ["metagqn"], "model.z_channels", [2], out_dir=tmp_path,
                      executor=ClusterExecutor(**LOCAL_JOBS, wait=True), **sweeps["kw"])  # fmt: skip
    assert info.value.counts["failed"] == 1 and info.value.exit_status == 1
    assert "add --resubmit-failed" in str(info.value) and "again later" not in str(info.value)
    doc = read_result(tmp_path / "sweep_model.z_channels.json", "sweep")
    (row,) = doc["unfinished_runs"]
    assert doc["runs"] == [] and row["state"] == "failed" and "is being written by another process" in row["error"]
