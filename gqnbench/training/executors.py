"""Where training runs execute: this machine's process pool (``local``) or one cluster job per run.

:func:`gqnbench.training.runner.run_jobs` runs every sweep and time-to-target run. With a
:class:`ClusterExecutor` it hands each run to `submitit <https://github.com/facebookincubator/submitit>`_
as its own job instead (Slurm, or submitit's local executor, which runs each job as a
background process on this machine and is what the tests use):

- **one run, one job.** The job trains the run with ``train(resume=True)``, which writes the
  run's own ``training_run`` file and checkpoints under the shared output folder, and returns
  the row the sweep or time-to-target summary needs (kept in submitit's result pickle).
- **preemption and time limits.** Slurm signals the job (``USR2``, ``signal_delay_s`` before
  the end); the job turns that into the training loop's clean stop (finish the step, write a
  checkpoint), then submitit's checkpoint hook (:meth:`ClusterRun.checkpoint`, returning a
  ``DelayedSubmission`` of the same run) requeues it, and the requeued job continues from that
  checkpoint. Resuming is exact on the CPU (see :mod:`gqnbench.training.loop`). A job that dies
  without that signal (node failure, ``kill -9``) resumes from its last periodic checkpoint
  when it is resubmitted.
- **multi-GPU runs** (``gpus_per_run`` > 1) start one task per GPU; each task exports the
  ``env://`` variables torchrun would set and joins the process group through
  :func:`gqnbench.training.distributed.init_distributed`, so the run goes through the same
  DDP path as ``torchrun -m gqnbench train``.
- **the submitting command can exit.** Job ids are recorded in ``<out>/cluster_jobs.json``,
  keyed by the run's request. Running the same command again finds them, reports which are
  pending, running, finished or failed, submits only runs it has never submitted (and failed
  ones only with ``resubmit_failed``), and returns whatever has finished; callers build their
  summary from those and list the rest as unfinished (:class:`RunsUnfinished`).
- **job states** come from ``sacct`` (through submitit) and, where Slurm keeps no accounting
  record, from ``squeue``; a job neither knows about and that left no result ended without one
  (failed). A job whose state Slurm cannot tell at all is ``unknown``; ``wait`` gives up on it
  after ``unknown_timeout_s``. ``wait`` polls every ``poll_s`` at first, then less often, up to
  ``poll_max_s``.
- **a run is trained by one job at a time.** A job that reuses a run another folder's job
  trains (the sweep's default setting is the time-to-target run) starts only after that job
  ended: a Slurm dependency (``afterany``), or with submitit's local executor a wait for that
  job's process. A run that could not be trained (its row says ``failed``) fails its job, so
  Slurm, the registry and ``resubmit_failed`` all see it.
- **sbatch is asked first.** :func:`executor_from_args` checks the job's parameters with
  ``sbatch --test-only`` (nothing is submitted or written), so a bad partition, account or GPU
  count is one line of bad input; without ``--gpus-per-run`` a run gets one GPU where the
  partition has GPUs and none otherwise.

``submitit`` is an optional dependency (``pip install "gqnbench[cluster]"``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGISTRY_FILE = "cluster_jobs.json"
SUBMITIT_DIR = "submitit"
INSTALL_HINT = (
    "--executor slurm needs the optional 'submitit' package: "
    'pip install "gqnbench[cluster]" (or: pip install submitit)'
)
EXECUTORS = ("local", "slurm", "submitit-local")

# submitit/Slurm states -> the ones the commands report.
PENDING, RUNNING, FINISHED, FAILED, UNKNOWN = "pending", "running", "finished", "failed", "unknown"
STATES = (PENDING, RUNNING, FINISHED, FAILED, UNKNOWN)
_SLURM_PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESV_DEL_HOLD"}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}


class ExecutorUnavailable(ValueError):
    """The cluster executor was asked for but ``submitit`` is not installed (message says how).

    A ``ValueError`` so the command line reports it as one line, like other unusable options.
    """


class RunsUnfinished(RuntimeError):
    """Some runs' cluster jobs have not finished: the results file at ``path`` is partial.

    Raised by sweeps and time to target after they wrote the summary of what finished, so a
    command can print it and say what to do: run it again later while jobs are pending or
    running (exit status 3), or resubmit the failed ones (exit status 1: a run failed).
    """

    def __init__(self, path: Path, counts: Mapping[str, int], registry: Path | None = None) -> None:
        self.path = Path(path)
        self.counts = dict(counts)
        self.registry = registry
        hints = []
        if self.waiting:
            hints.append("run the same command again later to collect the rest")
        if self.counts.get(FAILED):
            hints.append(
                f"add --resubmit-failed to submit the {self.counts[FAILED]} failed job(s) again "
                "(they resume from their checkpoints)"
            )
        super().__init__(
            f"{path}: partial summary ({_count_text(self.counts)}); {'; '.join(hints)}"
            + (f" (job ids in {registry})" if registry else "")
        )

    @property
    def waiting(self) -> int:
        """Jobs that may still finish by themselves (pending, running or of unknown state)."""
        return sum(self.counts.get(s, 0) for s in (PENDING, RUNNING, UNKNOWN))

    @property
    def exit_status(self) -> int:
        return 3 if self.waiting else 1

    @classmethod
    def combined(cls, parts: Sequence[RunsUnfinished]) -> RunsUnfinished:
        """One exception for several stages' (their common folder, the counts summed)."""
        if len(parts) == 1:
            return parts[0]
        counts = {s: sum(p.counts.get(s, 0) for p in parts) for s in STATES}
        return cls(Path(os.path.commonpath([p.path for p in parts])), counts)


def require_submitit() -> Any:
    try:
        import submitit
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching the import
        raise ExecutorUnavailable(INSTALL_HINT) from exc
    return submitit


def _canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _canonical(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return repr(obj) if isinstance(obj, float) else obj
    return f"<{type(obj).__module__}.{type(obj).__name__}>"  # e.g. in-memory data: identity not stable


def job_key(job: Mapping[str, Any]) -> str:
    """A stable id of one run's request (everything but the progress-bar flag)."""
    text = json.dumps(_canonical({k: v for k, v in job.items() if k != "progress"}), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def job_label(job: Mapping[str, Any]) -> str:
    """A readable name for a run (``metagqn-sweep-model.z_channels=8-seed0``, ``gqn-ttt-seed1``)."""
    parts = [str(job["model"])] if "model" in job else []
    if "tag" in job:
        parts.append(str(job["tag"]))
    elif "target_nll" in job:
        parts.append("ttt")
    if "seed" in job:
        parts.append(f"seed{job['seed']}")
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", "-".join(parts)) or "run"


def parse_minutes(text: str | int | float) -> int:
    """``240``, ``"90m"``, ``"4h"``, ``"2d"``, ``"1-12:00:00"``, ``"12:00:00"`` -> minutes."""
    if isinstance(text, (int, float)):
        return max(1, int(text))
    s = text.strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([mhd]?)", s)
    if m:
        return max(1, round(float(m.group(1)) * {"": 1, "m": 1, "h": 60, "d": 1440}[m.group(2)]))
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?", s)
    if m:
        days, a, b, c = (int(g) if g else 0 for g in m.groups())
        hours, minutes, seconds = (a, b, c) if m.group(4) is not None else (0, a, b)
        return max(1, days * 1440 + hours * 60 + minutes + (1 if seconds else 0))
    raise ValueError(f"time limit {text!r}: use minutes (240), 90m, 4h, 2d or Slurm's [D-]HH:MM[:SS]")


def _sbatch_flag(text: str) -> tuple[str, Any]:
    """``--qos=high`` / ``qos=high`` / ``--exclusive`` -> ``(name, value)`` for sbatch."""
    body = text.strip().lstrip("-")
    if not body or body.startswith("="):
        raise ValueError(f"sbatch flag {text!r}: use --name=value or --name")
    name, sep, value = body.partition("=")
    return name.strip(), (value.strip() if sep else True)


def _pid_is_submitit_controller(pid: int) -> bool:
    """A live (non-zombie) local submitit job controller with this pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc: best effort
        except OSError:
            return False
        return True
    return b"submitit" in cmdline  # a zombie has an empty cmdline; a reused pid another one


def _slurm_command(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run a Slurm client command (its output as text); ``ValueError`` where Slurm is not installed."""
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError as exc:
        raise ValueError(
            f"--executor slurm: {argv[0]} not found; run on a machine with Slurm's client commands "
            "(README, 'On a cluster', also says how to start a one-node cluster here)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ValueError(f"--executor slurm: {' '.join(argv)} did not answer within {exc.timeout:.0f} s") from exc


def _sbatch_error(stderr: str) -> str:
    """sbatch's error lines as one line, without the ``sbatch: error:`` prefixes."""
    lines = [re.sub(r"^(sbatch: )?(error: )?", "", ln.strip()) for ln in stderr.splitlines() if ln.strip()]
    return "; ".join(dict.fromkeys(lines)) or "no message"


def _slurm_state(folder: str, job_id: str) -> str | None:
    """Slurm's state of a job: from sacct, else squeue; ``""`` when Slurm no longer knows the job; None when it cannot be asked."""
    import submitit

    state = submitit.SlurmJob(folder=folder, job_id=job_id).get_info(mode="force").get("State") or "UNKNOWN"
    state = state.split()[0].upper()  # "CANCELLED by 123" -> CANCELLED
    if state != "UNKNOWN":
        return state
    # No accounting record (no slurmdbd on this cluster, or not written yet): ask the controller.
    try:
        proc = _slurm_command(["squeue", "-h", "-j", job_id, "-o", "%T"])
    except ValueError:
        return None
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.split()[0].upper()
    if proc.returncode == 0 or "Invalid job id" in proc.stderr:
        return ""
    return None


def partition_gpus(partition: str | None) -> int:
    """GPUs per run when none are asked for: 1 where the partition's nodes have GPUs (``sinfo``), else 0."""
    argv = ["sinfo", "-h", "-o", "%P %G"] + (["-p", partition] if partition else [])
    lines = _slurm_command(argv).stdout.splitlines()
    if not partition:  # the default partition is marked with "*"
        lines = [ln for ln in lines if ln.split()[0].endswith("*")] or lines
    return int(any("gpu" in ln.split(maxsplit=1)[-1] for ln in lines if ln.strip()))


def _device_preference(job: Mapping[str, Any]) -> str:
    """The run's ``train.device`` (picks the process-group backend: nccl for CUDA, gloo otherwise)."""
    from gqnbench.presets import Preset, get_preset

    preset = job.get("preset")
    try:
        if not isinstance(preset, Preset):
            preset = get_preset(str(preset), job.get("overrides"))
        return preset.train.device
    except Exception:  # noqa: BLE001 - a job without a preset: let CUDA's presence decide
        return "auto"


class ClusterRun:
    """One run as a submitit job: ``fn(job)`` with this job's threads, DDP and preemption bridge.

    submitit calls :meth:`checkpoint` when Slurm signals a preemption or the time limit; it
    returns the same run (``resume`` forced on), which the requeued job continues from the run's
    checkpoint file. ``after_pid``: a local job's pid to wait for before starting (submitit's
    local executor has no dependencies). A row with status ``failed`` raises, failing the job.
    """

    def __init__(
        self,
        fn: Callable[[dict[str, Any]], Any],
        job: dict[str, Any],
        threads: int | None = None,
        after_pid: int | None = None,
    ) -> None:
        self.fn = fn
        self.job = job
        self.threads = threads
        self.after_pid = after_pid

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        job = {**self.job, "resume": True} if "resume" in self.job else self.job
        return DelayedSubmission(ClusterRun(self.fn, job, self.threads), *args, **kwargs)

    def __call__(self) -> Any:
        import submitit

        from gqnbench.training import distributed as D
        from gqnbench.training import interrupt
        from gqnbench.training.runner import _worker_init, available_cores

        while self.after_pid is not None and _pid_is_submitit_controller(self.after_pid):
            time.sleep(1.0)
        env = submitit.JobEnvironment()
        local_tasks = max(1, env.num_tasks // max(1, env.num_nodes))
        # Torch threads: asked for, else Slurm's CPUs per task, else this machine's cores shared by its tasks.
        slurm_cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        _worker_init(self.threads or slurm_cpus or max(1, available_cores() // local_tasks))
        ctx = D.SINGLE
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            ctx = D.init_distributed(_device_preference(self.job))
        # submitit's handler (checkpoint + requeue + exit) would stop training mid-step. Ask the
        # training loop for its clean stop instead (finish the step, write a checkpoint, raise
        # Interrupted), then hand the signal on to submitit.
        usr = submitit.JobEnvironment._usr_sig()
        submitit_handler = signal.getsignal(usr)
        caught: list[int] = []

        def on_preempt(signum: int, frame: Any) -> None:
            caught.append(signum)
            flag = interrupt.active()
            if flag is None:
                raise interrupt.Interrupted(signum)
            flag.request(signum)

        signal.signal(usr, on_preempt)
        try:
            result = self.fn(self.job)
        except KeyboardInterrupt:
            if caught and callable(submitit_handler):
                submitit_handler(caught[0], None)  # checkpoint() -> requeue -> exit
            raise
        finally:
            signal.signal(usr, submitit_handler)
            D.shutdown(ctx)
        if isinstance(result, Mapping) and result.get("status") == "failed":
            raise RunFailed(f"{job_label(self.job)}: {result.get('error', 'failed')}")
        return result


class RunFailed(RuntimeError):
    """A cluster job's run could not be trained (the error its row records)."""


@dataclass(frozen=True)
class ClusterExecutor:
    """Each run as one submitit job. ``cluster``: ``slurm``, or ``local`` (submitit's LocalExecutor).

    Slurm resources per run: ``partition``, ``gpus_per_run`` (one task per GPU; 0, the default,
    for a CPU job), ``time_limit_min``, ``account``, ``cpus_per_task``, ``mem_gb``, ``sbatch_flags``
    (extra ``--name=value`` lines), ``setup`` (shell lines before the run, e.g. ``module load``).
    ``tasks_per_run`` overrides the number of processes (DDP ranks) per run, default
    ``max(1, gpus_per_run)``. ``threads``: torch threads per process (default: the job's cores
    / processes). ``wait``: block until every job finished or failed; otherwise return what has
    finished now. ``resubmit_failed``: submit failed jobs again (they resume from their
    checkpoints). ``max_requeues``: how often a run may be requeued after its time limit.
    ``poll_s`` / ``poll_max_s``: the first and the longest wait between two looks at the jobs'
    states; ``unknown_timeout_s``: how long ``wait`` waits for a job whose state Slurm cannot tell.
    """

    cluster: str = "slurm"
    partition: str | None = None
    gpus_per_run: int = 0
    tasks_per_run: int | None = None
    time_limit_min: int = 24 * 60
    account: str | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    sbatch_flags: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    threads: int | None = None
    wait: bool = False
    resubmit_failed: bool = False
    poll_s: float = 2.0
    poll_max_s: float = 30.0
    unknown_timeout_s: float = 600.0
    max_requeues: int = 3
    signal_delay_s: int = 120
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if self.cluster not in ("slurm", "local"):
            raise ValueError(f"cluster must be 'slurm' or 'local' (submitit's local executor), got {self.cluster!r}")
        if self.gpus_per_run < 0 or (self.tasks_per_run is not None and self.tasks_per_run < 1):
            raise ValueError("gpus_per_run must be >= 0 and tasks_per_run >= 1")
        for flag in self.sbatch_flags:
            _sbatch_flag(flag)

    @property
    def name(self) -> str:
        return "slurm" if self.cluster == "slurm" else "submitit-local"

    @property
    def tasks(self) -> int:
        return self.tasks_per_run or max(1, self.gpus_per_run)

    # -- Slurm parameters and the sbatch script ------------------------------------------------

    def slurm_parameters(self, job_name: str = "gqnbench", after: str | None = None) -> dict[str, Any]:
        """The ``SlurmExecutor.update_parameters`` arguments (sbatch names) for one run (``after``: a job id it waits for)."""
        params: dict[str, Any] = {
            "job_name": job_name,
            "time": self.time_limit_min,
            "nodes": 1,
            "ntasks_per_node": self.tasks,
            "signal_delay_s": self.signal_delay_s,
        }
        if self.gpus_per_run:
            params["gpus_per_node"] = self.gpus_per_run
        optional = {"partition": self.partition, "account": self.account, "cpus_per_task": self.cpus_per_task}
        params.update({k: v for k, v in optional.items() if v is not None})
        if self.mem_gb is not None:
            from submitit.slurm.slurm import _convert_mem

            params["mem"] = _convert_mem(self.mem_gb)
        if self.setup:
            params["setup"] = list(self.setup)
        # Requeueable: submitit's checkpoint hook requeues with `scontrol requeue`, and a preempted
        # job comes back by itself where the cluster requeues preempted jobs.
        params["additional_parameters"] = {"requeue": True, **dict(_sbatch_flag(f) for f in self.sbatch_flags)}
        if after is not None:  # afterany: should that job fail, this one trains the run itself (resuming)
            params["additional_parameters"]["dependency"] = f"afterany:{after}"
        return params

    def check_submission(self) -> None:
        """Ask ``sbatch --test-only`` (nothing is submitted or written) whether Slurm takes a job with these parameters.

        Raises ``ValueError`` with what sbatch said (a bad partition, account, time or GPU request).
        """
        require_submitit()
        from submitit.slurm.slurm import _make_sbatch_string

        folder = Path(tempfile.gettempdir()) / "%j"
        script = _make_sbatch_string(command="true", folder=folder, **self.slurm_parameters())
        proc = _slurm_command(["sbatch", "--test-only"], script)
        if proc.returncode != 0:
            request = f"partition {self.partition or '(the default)'}, {self.gpus_per_run} GPU(s) per run"
            raise ValueError(f"sbatch refuses the jobs ({request}): {_sbatch_error(proc.stderr)}")

    def sbatch_script(self, folder: str | Path, job_name: str = "gqnbench", python: str | None = None) -> str:
        """The sbatch script submitit writes for one run (no cluster needed to produce it)."""
        import shlex
        import sys

        require_submitit()
        from submitit.slurm.slurm import _make_sbatch_string

        folder = Path(folder) / "%j"
        command = " ".join(
            [python or shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))]
        )
        return _make_sbatch_string(command=command, folder=folder, **self.slurm_parameters(job_name))

    def _make_executor(self, folder: Path) -> Any:
        submitit = require_submitit()
        if self.cluster == "slurm":
            ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.max_requeues)
            ex.update_parameters(**self.slurm_parameters())
        else:
            ex = submitit.LocalExecutor(folder=folder, max_num_timeout=self.max_requeues)
            ex.update_parameters(
                timeout_min=self.time_limit_min,
                tasks_per_node=self.tasks,
                gpus_per_node=self.gpus_per_run,
                signal_delay_s=self.signal_delay_s,
            )
        return ex

    # -- states ---------------------------------------------------------------------------------

    def _state(self, entry: Mapping[str, Any], live: Mapping[str, Any]) -> tuple[str, str | None]:
        """(pending/running/finished/failed, error text) of a recorded job."""
        from submitit.core.utils import JobPaths, pickle_load

        jid = str(entry["job_id"])
        paths = JobPaths(entry["folder"], job_id=jid, task_id=0)
        if paths.result_pickle.exists():
            try:
                outcome, value = pickle_load(paths.result_pickle)
            except Exception as exc:  # noqa: BLE001 - a torn/unreadable pickle is a failed job
                return FAILED, f"unreadable result {paths.result_pickle}: {exc}"
            return (FINISHED, None) if outcome == "success" else (FAILED, str(value).strip().splitlines()[-1])
        if entry.get("cluster") == "local":
            job = live.get(jid)
            process = getattr(job, "_process", None)
            alive = process.poll() is None if process is not None else _pid_is_submitit_controller(int(jid))
            return (
                (RUNNING, None)
                if alive
                else (FAILED, f"job {jid} ended without a result (killed?); log {paths.stderr}")
            )
        state = _slurm_state(entry["folder"], jid)
        if state is None:
            return UNKNOWN, f"Slurm cannot tell the state of job {jid} (sacct and squeue failed); log {paths.stderr}"
        if state == "":
            return FAILED, f"job {jid} ended without a result (Slurm keeps no record of it); log {paths.stderr}"
        if state in _SLURM_PENDING:
            return PENDING, None
        if state in _SLURM_RUNNING:
            return RUNNING, None
        if state == "COMPLETED":  # the result pickle may lag on a network file system
            time.sleep(2)
            if paths.result_pickle.exists():
                return self._state(entry, live)
        return FAILED, f"Slurm state {state}; log {paths.stderr}"

    # -- the driver -----------------------------------------------------------------------------

    def run(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]],
        jobs: Sequence[dict[str, Any]],
        out_dir: str | Path,
        *,
        desc: str = "runs",
        progress: bool = True,
    ) -> list[dict[str, Any]]:
        """Submit what has never been submitted, then return one entry per job, in order.

        A finished job gives ``fn``'s return value; any other gives ``{"unfinished": True,
        "state", "job_id", "label", "error"}``. Waits for all when ``wait``.
        """
        out_dir = Path(out_dir)
        registry = JobRegistry(out_dir / REGISTRY_FILE)
        folder = (out_dir / SUBMITIT_DIR / "%j").absolute()
        keys = [job_key(job) for job in jobs]
        live: dict[str, Any] = {}  # submitit Job objects of this call's submissions, by job id
        states, to_submit = self._recorded_states(keys, registry, live)
        if to_submit:
            self._submit(fn, jobs, keys, to_submit, registry, folder, desc, live, states)
        counts = self._poll(keys, registry, live, states, desc, progress)
        self.log(f"{desc}: {len(keys)} {self.name} job(s): " + _count_text(counts))
        return [self._outcome(registry.get(key), *states[key]) for key in keys]

    def _recorded_states(
        self, keys: Sequence[str], registry: JobRegistry, live: Mapping[str, Any]
    ) -> tuple[dict[str, tuple[str, str | None]], list[int]]:
        """(state of each recorded job, indices of the jobs to submit).

        To submit: jobs never submitted, and failed ones when ``resubmit_failed``.
        """
        states: dict[str, tuple[str, str | None]] = {}
        to_submit = []
        for i, key in enumerate(keys):
            entry = registry.get(key)
            if entry is None:
                to_submit.append(i)
                continue
            states[key] = self._state(entry, live)
            if states[key][0] == FAILED and self.resubmit_failed:
                to_submit.append(i)
        return states, to_submit

    def _submit(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]],
        jobs: Sequence[dict[str, Any]],
        keys: Sequence[str],
        to_submit: Sequence[int],
        registry: JobRegistry,
        folder: Path,
        desc: str,
        live: dict[str, Any],
        states: dict[str, tuple[str, str | None]],
    ) -> None:
        """Submit ``jobs[i]`` for each index, recording each id as soon as it exists; they start pending.

        A job whose run another recorded job is still training starts after it (:meth:`_trainer_of`).
        """
        from submitit.core.utils import FailedJobError

        ex = self._make_executor(folder)
        for i in to_submit:
            label = job_label(jobs[i])
            after = self._trainer_of(jobs[i], live)
            if self.cluster == "slurm":
                ex.update_parameters(**self.slurm_parameters(f"gqnbench-{label}", after))
            # No progress bars in a job: they would only fill its log.
            job = {**jobs[i], "progress": False} if "progress" in jobs[i] else jobs[i]
            run = ClusterRun(fn, job, self.threads, int(after) if after and self.cluster == "local" else None)
            try:
                submitted = ex.submit(run)
            except FailedJobError as exc:  # sbatch refused it: bad input, one line; its temporary files go
                for leftover in [*folder.parent.glob("*.pkl"), *folder.parent.glob(".submission_file_*.sh")]:
                    leftover.unlink(missing_ok=True)
                raise ValueError(f"sbatch refuses job {label}: {_sbatch_error(str(exc))}") from exc
            live[str(submitted.job_id)] = submitted
            registry.record(keys[i], label, str(submitted.job_id), self.cluster, str(folder), desc)
            states[keys[i]] = (PENDING, None)
            if after:
                self.log(f"{desc}: {label} (job {submitted.job_id}) starts after job {after}, which trains its run")
        self.log(f"{desc}: submitted {len(to_submit)} {self.name} job(s) (ids in {registry.path})")

    def _trainer_of(self, job: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
        """The id of a pending or running job recorded in another folder that trains the run ``job`` reuses.

        A job with a ``run_dir`` other than its ``out_dir`` reads (or trains) a run that lives there
        (the sweep's default setting reuses the time-to-target run); the job that trains it is
        recorded in that folder's registry under the same label.
        """
        run_dir = job.get("run_dir")
        if run_dir is None or Path(run_dir).absolute() == Path(job.get("out_dir", run_dir)).absolute():
            return None
        path = Path(run_dir) / REGISTRY_FILE
        if not path.is_file():
            return None
        label = job_label(job)
        for entry in JobRegistry(path).entries.values():
            if entry["label"] == label and self._state(entry, live)[0] in (PENDING, RUNNING, UNKNOWN):
                return str(entry["job_id"])
        return None

    def _poll(
        self,
        keys: Sequence[str],
        registry: JobRegistry,
        live: Mapping[str, Any],
        states: dict[str, tuple[str, str | None]],
        desc: str,
        progress: bool,
    ) -> dict[str, int]:
        """Refresh the states of unfinished jobs (until none is left with ``wait``); the count per state.

        ``wait`` looks again after ``poll_s``, then half as long again each time up to ``poll_max_s``
        (back to ``poll_s`` when a state changed), and stops waiting for a job whose state has been
        unknown for ``unknown_timeout_s``.
        """
        shown: dict[str, int] | None = None
        delay = self.poll_s
        unknown_since: dict[str, float] = {}
        while True:
            for key in keys:
                if states[key][0] in (PENDING, RUNNING, UNKNOWN):
                    states[key] = self._state(registry.get(key), live)
            now = time.monotonic()
            for key in keys:
                if states[key][0] == UNKNOWN:
                    unknown_since.setdefault(key, now)
                else:
                    unknown_since.pop(key, None)
            counts = {s: sum(states[k][0] == s for k in keys) for s in STATES}
            waiting = counts[PENDING] + counts[RUNNING]
            waiting += sum(now - since < self.unknown_timeout_s for since in unknown_since.values())
            if not self.wait or waiting == 0:
                return counts
            if counts != shown:
                if progress:
                    self.log(f"{desc}: waiting: " + _count_text(counts))
                shown, delay = counts, self.poll_s
            time.sleep(delay)
            delay = min(self.poll_max_s, delay * 1.5)

    def _outcome(self, entry: Mapping[str, Any], state: str, error: str | None) -> dict[str, Any]:
        """A finished job's return value (from submitit's result pickle), else the ``unfinished`` entry."""
        from submitit.core.utils import JobPaths, pickle_load

        if state == FINISHED:
            paths = JobPaths(entry["folder"], job_id=str(entry["job_id"]), task_id=0)
            return pickle_load(paths.result_pickle)[1]
        if state in (FAILED, UNKNOWN):
            self.log(f"  {entry['label']} (job {entry['job_id']}) {state}: {error}")
        return {"unfinished": True, "state": state, "job_id": entry["job_id"], "label": entry["label"], "error": error}


def _count_text(counts: Mapping[str, int]) -> str:
    """``"2 running, 1 finished"``: the states that have jobs, in the order given."""
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


class JobRegistry:
    """``<out>/cluster_jobs.json``: run key -> the job last submitted for it (earlier ids kept)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.entries = dict(json.loads(self.path.read_text())["jobs"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise RuntimeError(f"{self.path}: unreadable job registry ({exc}); move it away to start over") from exc

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def record(self, key: str, label: str, job_id: str, cluster: str, folder: str, desc: str) -> None:
        earlier = self.entries.get(key)
        history = [*earlier.get("earlier_job_ids", []), earlier["job_id"]] if earlier else []
        self.entries[key] = {
            "label": label,
            "job_id": job_id,
            "cluster": cluster,
            "folder": folder,
            "group": desc,
            "submitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "earlier_job_ids": history,
        }
        from gqnbench.files import atomic_write_text

        atomic_write_text(self.path, json.dumps({"jobs": self.entries}, indent=2) + "\n")


def unfinished_runs(jobs: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows for ``unfinished_runs`` in a results file: model/seed/value of the run + its job state."""
    rows = []
    for job, r in zip(jobs, results):
        if r.get("unfinished"):
            row = {k: job[k] for k in ("model", "value", "seed") if k in job}
            row.update({k: r[k] for k in ("state", "job_id", "label", "error")})
            rows.append(row)
    return rows


def raise_if_unfinished(path: Path, results: Sequence[Mapping[str, Any]], out_dir: str | Path) -> None:
    """After a partial results file was written: raise :class:`RunsUnfinished` if any run is missing."""
    states = [r["state"] for r in results if isinstance(r, Mapping) and r.get("unfinished")]
    if states:
        counts = {s: states.count(s) for s in STATES}
        counts[FINISHED] = len(results) - len(states)
        raise RunsUnfinished(path, counts, Path(out_dir) / REGISTRY_FILE)


# -- command-line options -------------------------------------------------------------------------


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("where runs execute (see README 'On a cluster')")
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: this machine's process pool (default); slurm: one Slurm job per run through submitit; "
        "submitit-local: one background job per run on this machine (tries the cluster path without Slurm)",
    )
    g.add_argument("--partition", default=None, help="Slurm partition")
    g.add_argument(
        "--gpus-per-run", type=int, default=None,
        help="GPUs per run (DDP over them inside the job; 0: a CPU job). Default: 1 where the partition has GPUs, else 0",
    )  # fmt: skip
    g.add_argument("--time-limit", default="24h", help="per job: minutes, 90m, 4h or [D-]HH:MM[:SS] (default 24h)")
    g.add_argument("--account", default=None, help="Slurm account")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per task (per GPU)")
    g.add_argument("--mem-gb", type=float, default=None, help="memory per job in GB")
    g.add_argument(
        "--sbatch", dest="sbatch_flags", action="append", default=[], metavar="--NAME=VALUE",
        help="an extra sbatch flag, e.g. --sbatch=--qos=high (repeatable)",
    )  # fmt: skip
    g.add_argument(
        "--setup", action="append", default=[], metavar="CMD",
        help="a shell line run before each job, e.g. 'module load cuda' (repeatable)",
    )  # fmt: skip
    g.add_argument("--wait", action="store_true", help="stay until every job finished (default: submit and exit)")
    g.add_argument("--resubmit-failed", action="store_true", help="submit failed jobs again (they resume)")


def executor_from_args(args: argparse.Namespace, check: bool = True) -> ClusterExecutor | None:
    """None for ``--executor local``; else a :class:`ClusterExecutor` (needs submitit).

    For Slurm, a missing ``--gpus-per-run`` is asked of ``sinfo`` (:func:`partition_gpus`) and,
    with ``check``, ``sbatch --test-only`` must accept the job (:meth:`ClusterExecutor.check_submission`).
    """
    kind = getattr(args, "executor", "local")
    if kind == "local":
        return None
    require_submitit()
    gpus = 0
    if kind == "slurm":
        gpus = args.gpus_per_run if args.gpus_per_run is not None else partition_gpus(args.partition)
    executor = ClusterExecutor(
        cluster="slurm" if kind == "slurm" else "local",
        partition=args.partition,
        gpus_per_run=gpus,
        time_limit_min=parse_minutes(args.time_limit),
        account=args.account,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        sbatch_flags=tuple(args.sbatch_flags),
        setup=tuple(args.setup),
        wait=args.wait,
        resubmit_failed=args.resubmit_failed,
        poll_s=2.0 if kind == "slurm" else 0.5,
    )
    if kind == "slurm" and check:
        executor.check_submission()
    return executor
