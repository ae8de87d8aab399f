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

# submitit/Slurm states -> the four the commands report.
PENDING, RUNNING, FINISHED, FAILED = "pending", "running", "finished", "failed"
_SLURM_PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESV_DEL_HOLD", "UNKNOWN"}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}


class ExecutorUnavailable(ValueError):
    """The cluster executor was asked for but ``submitit`` is not installed (message says how).

    A ``ValueError`` so the command line reports it as one line, like other unusable options.
    """


class RunsUnfinished(RuntimeError):
    """Some runs' cluster jobs have not finished: the results file at ``path`` is partial.

    Raised by sweeps and time to target after they wrote the summary of what finished, so a
    command can print it and say to run it again later.
    """

    def __init__(self, path: Path, counts: Mapping[str, int], registry: Path | None = None) -> None:
        self.path = Path(path)
        self.counts = dict(counts)
        self.registry = registry
        states = _count_text(self.counts)
        super().__init__(
            f"{path}: partial summary ({states}); run the same command again later to collect the rest"
            + (f" (job ids in {registry})" if registry else "")
        )


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
    checkpoint file.
    """

    def __init__(self, fn: Callable[[dict[str, Any]], Any], job: dict[str, Any], threads: int | None = None) -> None:
        self.fn = fn
        self.job = job
        self.threads = threads

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        job = {**self.job, "resume": True} if "resume" in self.job else self.job
        return DelayedSubmission(ClusterRun(self.fn, job, self.threads), *args, **kwargs)

    def __call__(self) -> Any:
        import submitit

        from gqnbench.training import distributed as D
        from gqnbench.training.runner import _worker_init, available_cores

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
        # training loop for its clean stop instead (the first Ctrl-C: finish the step, write a
        # checkpoint, raise KeyboardInterrupt), then hand the signal on to submitit.
        usr = submitit.JobEnvironment._usr_sig()
        submitit_handler = signal.getsignal(usr)
        caught: list[int] = []

        def on_preempt(signum: int, frame: Any) -> None:
            caught.append(signum)
            interrupt = signal.getsignal(signal.SIGINT)
            if callable(interrupt):
                interrupt(signal.SIGINT, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(usr, on_preempt)
        try:
            return self.fn(self.job)
        except KeyboardInterrupt:
            if caught and callable(submitit_handler):
                submitit_handler(caught[0], None)  # checkpoint() -> requeue -> exit
            raise
        finally:
            signal.signal(usr, submitit_handler)
            D.shutdown(ctx)


@dataclass(frozen=True)
class ClusterExecutor:
    """Each run as one submitit job. ``cluster``: ``slurm``, or ``local`` (submitit's LocalExecutor).

    Slurm resources per run: ``partition``, ``gpus_per_run`` (one task per GPU; 0 for a CPU
    job), ``time_limit_min``, ``account``, ``cpus_per_task``, ``mem_gb``, ``sbatch_flags``
    (extra ``--name=value`` lines), ``setup`` (shell lines before the run, e.g. ``module load``).
    ``tasks_per_run`` overrides the number of processes (DDP ranks) per run, default
    ``max(1, gpus_per_run)``. ``threads``: torch threads per process (default: the job's cores
    / processes). ``wait``: block until every job finished or failed; otherwise return what has
    finished now. ``resubmit_failed``: submit failed jobs again (they resume from their
    checkpoints). ``max_requeues``: how often a run may be requeued after its time limit.
    """

    cluster: str = "slurm"
    partition: str | None = None
    gpus_per_run: int = 1
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
    poll_s: float = 30.0
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

    def slurm_parameters(self, job_name: str = "gqnbench") -> dict[str, Any]:
        """The ``SlurmExecutor.update_parameters`` arguments (sbatch names) for one run."""
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
        return params

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
        import submitit

        state = submitit.SlurmJob(folder=entry["folder"], job_id=jid).get_info(mode="force").get("State") or "UNKNOWN"
        state = state.split()[0].upper()  # "CANCELLED by 123" -> CANCELLED
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
        """Submit ``jobs[i]`` for each index, recording each id as soon as it exists; they start pending."""
        ex = self._make_executor(folder)
        for i in to_submit:
            label = job_label(jobs[i])
            if self.cluster == "slurm":
                ex.update_parameters(job_name=f"gqnbench-{label}")
            # No progress bars in a job: they would only fill its log.
            run = ClusterRun(fn, {**jobs[i], "progress": False} if "progress" in jobs[i] else jobs[i], self.threads)
            submitted = ex.submit(run)
            live[str(submitted.job_id)] = submitted
            registry.record(keys[i], label, str(submitted.job_id), self.cluster, str(folder), desc)
            states[keys[i]] = (PENDING, None)
        self.log(f"{desc}: submitted {len(to_submit)} {self.name} job(s) (ids in {registry.path})")

    def _poll(
        self,
        keys: Sequence[str],
        registry: JobRegistry,
        live: Mapping[str, Any],
        states: dict[str, tuple[str, str | None]],
        desc: str,
        progress: bool,
    ) -> dict[str, int]:
        """Refresh the states of pending and running jobs (until none is left with ``wait``); the count per state."""
        shown: dict[str, int] | None = None
        while True:
            for key in keys:
                if states[key][0] in (PENDING, RUNNING):
                    states[key] = self._state(registry.get(key), live)
            counts = {s: sum(states[k][0] == s for k in keys) for s in (PENDING, RUNNING, FINISHED, FAILED)}
            if not self.wait or counts[PENDING] + counts[RUNNING] == 0:
                return counts
            if progress and counts != shown:
                self.log(f"{desc}: waiting: " + _count_text(counts))
                shown = counts
            time.sleep(self.poll_s)

    def _outcome(self, entry: Mapping[str, Any], state: str, error: str | None) -> dict[str, Any]:
        """A finished job's return value (from submitit's result pickle), else the ``unfinished`` entry."""
        from submitit.core.utils import JobPaths, pickle_load

        if state == FINISHED:
            paths = JobPaths(entry["folder"], job_id=str(entry["job_id"]), task_id=0)
            return pickle_load(paths.result_pickle)[1]
        if state == FAILED:
            self.log(f"  {entry['label']} (job {entry['job_id']}) failed: {error}")
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
        from gqnbench.results import atomic_write_text  # written after every submission: never lose an id

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
        counts = {s: states.count(s) for s in (PENDING, RUNNING, FAILED)}
        counts = {FINISHED: len(results) - len(states), **counts}
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
    g.add_argument("--gpus-per-run", type=int, default=1, help="GPUs per run (DDP over them inside the job; 0: CPU)")
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


def executor_from_args(args: argparse.Namespace) -> ClusterExecutor | None:
    """None for ``--executor local``; else a :class:`ClusterExecutor` (needs submitit)."""
    kind = getattr(args, "executor", "local")
    if kind == "local":
        return None
    require_submitit()
    return ClusterExecutor(
        cluster="slurm" if kind == "slurm" else "local",
        partition=args.partition,
        gpus_per_run=args.gpus_per_run if kind == "slurm" else 0,
        time_limit_min=parse_minutes(args.time_limit),
        account=args.account,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        sbatch_flags=tuple(args.sbatch_flags),
        setup=tuple(args.setup),
        wait=args.wait,
        resubmit_failed=args.resubmit_failed,
        poll_s=30.0 if kind == "slurm" else 1.0,
    )
