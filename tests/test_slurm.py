"""``--executor slurm`` against a real Slurm cluster: every job goes through ``sbatch``.

CI starts a one-node cluster from Debian's packages first (``ci/slurm-single-node.sh``, run by
``.ci/run``); the tests run against that cluster (``ClusterName=gqnbench``), or against any other
one only when ``GQNBENCH_SLURM_PARTITION`` names the partition to use, and skip with the reason
otherwise (a laptop, a CI without root). Runs are tiny (tiny preset, a few dozen steps, one CPU
each) and final NLLs are compared with the local executor's, which they equal exactly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gqnbench.data.generate import generate_dataset
from gqnbench.results import read_result
from gqnbench.training.executors import REGISTRY_FILE

pytest.importorskip("submitit")
pytestmark = pytest.mark.slurm
TEST_CLUSTER = "gqnbench"  # the ClusterName ci/slurm-single-node.sh writes


def _slurm(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.fixture(scope="module")
def partition() -> str:
    """The partition to submit to, or a skip saying why there is none."""
    if shutil.which("sbatch") is None:
        pytest.skip("no Slurm here (sbatch not found); start one with: sudo bash ci/slurm-single-node.sh")
    try:  # without a readable slurm.conf the client retries for a minute: do not wait that long
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.skip("no Slurm controller answers (scontrol ping did not return within 20 s)")
    if "UP" not in ping.stdout:
        pytest.skip(f"no Slurm controller answers (scontrol ping: {(ping.stdout + ping.stderr).strip()})")
    chosen = os.environ.get("GQNBENCH_SLURM_PARTITION")
    name = re.search(r"^ClusterName\s*=\s*(\S+)", _slurm("scontrol", "show", "config"), re.M)
    if chosen is None and (name is None or name.group(1) != TEST_CLUSTER):
        pytest.skip(
            f"the reachable Slurm cluster is not the test cluster of ci/slurm-single-node.sh (ClusterName "
            f"{TEST_CLUSTER}); set GQNBENCH_SLURM_PARTITION to submit the test jobs to it anyway"
        )
    return chosen or next(p.rstrip("*") for p in _slurm("sinfo", "-h", "-o", "%P").split() if p.endswith("*"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("slurm-data") / "root"
    generate_dataset(root, 32, seed=6, val_fraction=0.25, scenes_per_file=8, workers=1, progress=False)
    # One torch thread in every run, local or on the cluster, so their numbers agree exactly.
    return [f"--set=data.root={root}", "--set=data.val_scenes=4", "--set=train.tensorboard=false",
            "--set=train.threads=1"]  # fmt: skip


def gqnbench(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "gqnbench", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip
    print(proc.stdout[-3000:], proc.stderr[-3000:])  # shown when a test fails
    return proc


def _registry(folder: Path) -> dict[str, dict]:
    return json.loads((folder / REGISTRY_FILE).read_text())["jobs"]


def _sacct_states(job_ids: list[str]) -> dict[str, str]:
    out = _slurm("sacct", "-n", "-X", "-P", "-o", "JobID,State", *[f"-j{j}" for j in job_ids])
    return dict(line.split("|")[:2] for line in out.splitlines() if line)


def _wait_for_step(run_file: Path, step: int, timeout: float = 300) -> None:
    start = time.monotonic()
    while True:
        try:
            if json.loads(run_file.read_text())["eval_curve"][-1]["step"] >= step:
                return
        except (FileNotFoundError, json.JSONDecodeError, IndexError, KeyError):
            pass
        assert time.monotonic() - start < timeout, f"{run_file} never reached step {step}"
        time.sleep(0.2)


# -- the main job: submitted without --wait, collected with it, equal to the local executor --------

STAGES = ["--skip", "costs", "benchmarks", "profile", "samples", "report"]


def test_main_job_on_slurm_runs_reused_runs_after_their_training_job_and_equals_local(
    partition: str, data: list[str], tmp_path: Path
) -> None:
    base = ["run", "--preset", "tiny", "--quick", "--cache", str(tmp_path / "cache"), *STAGES, *data]
    local = gqnbench(*base, "--out", "local", cwd=tmp_path)
    assert local.returncode == 0
    # Several jobs at once (the node offers more CPUs than it has): the sweep's job that reuses the
    # time-to-target run gqn-ttt-seed0 would run while that run trains unless it waits for it.
    slurm = [*base, "--out", "slurm", "--executor", "slurm", "--partition", partition, "--cpus-per-task", "1"]
    first = gqnbench(*slurm, cwd=tmp_path)  # no --gpus-per-run: a CPU partition gets CPU jobs
    assert first.returncode == 3, first.stderr
    assert "training jobs not finished yet" in first.stdout and "run the same command again later" in first.stdout
    results = tmp_path / "slurm" / "results"
    ttt_jobs, sweep_jobs = _registry(results / "time_to_target"), _registry(results / "sweep")

    collected = gqnbench(*slurm, "--wait", cwd=tmp_path)
    assert collected.returncode == 0, collected.stderr
    assert "submitted" not in collected.stdout  # every job was already recorded
    for stage, name in (("time_to_target", "time_to_target.json"), ("sweep", "sweep_model.z_channels.json")):
        mine = read_result(results / stage / name)
        theirs = read_result(tmp_path / "local" / "results" / stage / name)
        assert mine["unfinished_runs"] == [] and all(r["status"] == "completed" for r in mine["runs"])
        key = "best_val_nll" if stage == "time_to_target" else "final_val_nll"
        assert [(r["model"], r[key]) for r in mine["runs"]] == [(r["model"], r[key]) for r in theirs["runs"]]
    reused = read_result(results / "sweep" / "sweep_model.z_channels.json")["runs"]
    assert [r["reused_main_run"] for r in reused if r["model"] == "gqn" and r["value"] == 2] == [True]
    jobs = [e["job_id"] for e in [*ttt_jobs.values(), *sweep_jobs.values()]]
    assert len(jobs) == 6 and set(_sacct_states(jobs).values()) == {"COMPLETED"}
    # How: the reusing job waited for the job that trains its run.
    trainer = next(e["job_id"] for e in ttt_jobs.values() if e["label"] == "gqn-ttt-seed0")
    reuser = next(e for e in sweep_jobs.values() if e["label"] == "gqn-ttt-seed0")
    assert f"gqn-ttt-seed0 (job {reuser['job_id']}) starts after job {trainer}" in first.stdout
    script = (Path(reuser["folder"].replace("%j", reuser["job_id"])) / f"{reuser['job_id']}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterany:{trainer}" in script and "--gpus" not in script

    before = {stage: (results / stage / REGISTRY_FILE).read_text() for stage in ("time_to_target", "sweep")}
    again = gqnbench(*slurm, cwd=tmp_path)  # everything finished: nothing to submit, exit 0
    assert again.returncode == 0 and "submitted" not in again.stdout
    assert {stage: (results / stage / REGISTRY_FILE).read_text() for stage in before} == before


# -- one time-to-target run, stopped on the cluster and continued ------------------------------

STEPS = 400  # a few seconds: the signal (at step 20) reaches the job long before the end


def _ttt(data: list[str], out: str, *extra: str, steps: int = STEPS) -> list[str]:
    # An unreachable target: the run trains its whole budget; checkpoints only when stopped.
    return ["time-to-target", "--preset", "tiny", "--models", "gqn", "--seeds", "1", "--target", "1",
            "--budget", str(steps), "--out", out, "--no-progress", "--set=train.eval_every=20",
            "--set=train.checkpoint_every=10000", *data, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def local_ttt(data: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    cwd = tmp_path_factory.mktemp("ttt-local")
    assert gqnbench(*_ttt(data, "out"), cwd=cwd).returncode == 0
    return read_result(cwd / "out" / "runs" / "gqn-ttt-seed0.json", "training_run")


def _slurm_ttt(partition: str, data: list[str], *extra: str, steps: int = STEPS) -> list[str]:
    slurm = ["--executor", "slurm", "--partition", partition, "--cpus-per-task", "1"]
    return _ttt(data, "out", *slurm, *extra, steps=steps)


def _submit_and_signal(argv: list[str], cwd: Path, *scancel: str) -> dict:
    """Submit the run, and once it has trained 20 steps ``scancel SCANCEL... JOBID``; its registry entry."""
    assert gqnbench(*argv, cwd=cwd).returncode == 3
    (entry,) = _registry(cwd / "out").values()
    _wait_for_step(cwd / "out" / "runs" / "gqn-ttt-seed0.json", 20)
    subprocess.run(["scancel", *scancel, entry["job_id"]], check=True, timeout=60)
    return entry


def test_usr2_requeues_the_job_and_it_resumes_to_the_identical_nll(
    partition: str, data: list[str], local_ttt: dict, tmp_path: Path
) -> None:
    argv = _slurm_ttt(partition, data)
    # What Slurm sends before the time limit or a preemption (--signal=USR2@...).
    entry = _submit_and_signal(argv, tmp_path, "--signal=USR2")
    done = gqnbench(*argv, "--wait", cwd=tmp_path)
    assert done.returncode == 0
    run = read_result(tmp_path / "out" / "runs" / "gqn-ttt-seed0.json", "training_run")
    assert run["status"] == "completed" and 20 <= run["resumed_from_step"] < STEPS
    assert [p["val_nll"] for p in run["eval_curve"]] == [p["val_nll"] for p in local_ttt["eval_curve"]]
    (after,) = _registry(tmp_path / "out").values()
    assert after["job_id"] == entry["job_id"] and after["earlier_job_ids"] == []  # requeued, not resubmitted
    log = (Path(entry["folder"].replace("%j", entry["job_id"])) / f"{entry['job_id']}_0_log.out").read_text()
    assert "Requeued job" in log


def test_scancel_then_resubmit_failed_resumes_from_the_checkpoint_written_at_the_cancel(
    partition: str, data: list[str], local_ttt: dict, tmp_path: Path
) -> None:
    argv = _slurm_ttt(partition, data)
    entry = _submit_and_signal(argv, tmp_path)  # scancel: SIGTERM to the job's tasks
    start = time.monotonic()
    while not _sacct_states([entry["job_id"]]).get(entry["job_id"], "").startswith("CANCELLED"):  # "CANCELLED by 0"
        assert time.monotonic() - start < 120
        time.sleep(0.5)

    later = gqnbench(*argv, cwd=tmp_path)  # running it again cannot help: the job is over
    assert later.returncode == 1, later.stdout
    assert "add --resubmit-failed to submit the 1 failed job(s) again" in later.stdout
    assert "run the same command again later" not in later.stdout
    assert "failed (job" in later.stdout and "Slurm state CANCELLED" in later.stdout

    done = gqnbench(*argv, "--resubmit-failed", "--wait", cwd=tmp_path)
    assert done.returncode == 0
    run = read_result(tmp_path / "out" / "runs" / "gqn-ttt-seed0.json", "training_run")
    assert run["status"] == "completed" and 20 <= run["resumed_from_step"] < STEPS
    assert [p["val_nll"] for p in run["eval_curve"]] == [p["val_nll"] for p in local_ttt["eval_curve"]]
    (after,) = _registry(tmp_path / "out").values()
    assert after["earlier_job_ids"] == [entry["job_id"]]


def test_wait_ends_on_a_cluster_without_accounting(partition: str, data: list[str], tmp_path: Path) -> None:
    # sacct answers "accounting storage is disabled" (the job's state is UNKNOWN to submitit): the
    # state comes from squeue, and a job killed without a result ends the wait instead of looking
    # pending forever.
    conf = _slurm("scontrol", "show", "config")
    source = re.search(r"^SLURM_CONF\s*=\s*(\S+)", conf, re.M).group(1)
    text = re.sub(r"^Accounting\S*=.*$", "", Path(source).read_text(), flags=re.M)
    (tmp_path / "slurm.conf").write_text(text + "\nAccountingStorageType=accounting_storage/none\n")
    env = {**os.environ, "SLURM_CONF": str(tmp_path / "slurm.conf")}
    assert "accounting storage is disabled" in subprocess.run(["sacct"], env=env, capture_output=True, text=True).stderr
    argv = _slurm_ttt(partition, data, "--wait", steps=100_000)  # killed long before its end
    waiting = subprocess.Popen([sys.executable, "-m", "gqnbench", *argv], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _wait_for_step(tmp_path / "out" / "runs" / "gqn-ttt-seed0.json", 0)
        (entry,) = _registry(tmp_path / "out").values()
        subprocess.run(["scancel", "--signal=KILL", entry["job_id"]], check=True, timeout=60)
        out, err = waiting.communicate(timeout=180)
    finally:
        waiting.kill()
    print(out, err)
    assert waiting.returncode == 1
    assert "failed (job" in out and "--resubmit-failed" in out


def test_nonexistent_partition_is_one_line_of_bad_input_and_leaves_nothing(data: list[str], tmp_path: Path,
                                                                           partition: str) -> None:  # fmt: skip
    proc = gqnbench("sweep", "--preset", "tiny", "--models", "gqn", "--z-channels", "2", "--steps", "5",
                    "--out", "out", "--no-progress", *data, "--executor", "slurm", "--partition", "no-such-part",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("gqnbench sweep: error: sbatch refuses the jobs (partition no-such-part")
    assert "invalid partition" in line.lower()
    assert not (tmp_path / "out").exists()
