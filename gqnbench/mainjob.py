"""The main job behind ``gqnbench run``: data -> costs -> benchmarks -> time to target ->
latent-size sweep -> sample predictions -> report, resumable stage by stage.

Each stage writes its results under ``<out>/results/`` (atomically, by the package that owns
it) and is recorded in ``<out>/results/mainjob.json`` when it finishes, so re-running the same
command after an interrupt skips finished stages; the training stages also skip finished
runs and continue unfinished ones from their checkpoints. The report stage reads only the
results folder, so the same report can be rebuilt later with ``python -m gqnbench.report``.

A training stage with a failed run (an error: a full disk, another process writing the run) is
recorded as ``failed``, not done: the later stages and the report still run (the report lists
the failure), the job ends with :class:`~gqnbench.training.run_files.RunsFailed` (exit 1), and
running the same command again retries the failed runs (finished ones are reused). A stage
that runs again makes the stages that read its results run again too (:data:`DEPENDS`). Runs
that diverged are finished results of their stage, but the job still ends with ``RunsFailed``.

With a cluster ``executor`` (:mod:`gqnbench.training.executors`) the training stages submit
their runs as jobs (both stages' jobs at once); while some have not finished, the job stops
before the samples stage with :class:`~gqnbench.training.executors.RunsUnfinished`, and
running the same command later collects them and carries on.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from gqnbench.environment import load_record, machine_load
from gqnbench.files import LOCK_NAME, hold_lock
from gqnbench.presets import MODEL_NAMES, Preset, get_preset
from gqnbench.results import read_result, write_result
from gqnbench.training.budgets import SuiteBudget, suite_budget
from gqnbench.training.executors import ClusterExecutor, RunsUnfinished
from gqnbench.training.run_files import RunsFailed

STAGES = ("data", "costs", "benchmarks", "profile", "time_to_target", "sweep", "samples", "report")
# The stages that read another's results: when that one runs again, so do they.
DEPENDS = {"sweep": ("time_to_target",), "samples": ("time_to_target",)}
# The budget fields a user's --set decides (it wins over the budget, and the plan records what ran).
BUDGET_FIELDS = {
    "train.steps": ("ttt_budget_steps", "sweep_steps"),
    "train.eval_every": ("eval_every",),
    "data.val_scenes": ("val_scenes",),
    "train.amp": ("amp",),
}
STATE_FILE = "mainjob.json"
QUICK_COST_SECTIONS = ("params", "flops", "reference", "matmul_peak", "memory", "numerics")
# The default job measures what the report needs, at the quick sizes (about a minute at cpu); the
# full matrices stay in ``gqnbench costs`` and ``pytest benchmarks/``.
DEFAULT_COST_SECTIONS = ("params", "flops", "reference", "matmul_peak", "throughput", "memory", "numerics")


def quick_budget(full: SuiteBudget) -> SuiteBudget:
    """The ``--quick`` plan: one seed, a few dozen steps, two latent sizes: plumbing in < 3 min."""
    return dataclasses.replace(
        full,
        ttt_seeds=1,
        ttt_budget_steps=min(full.ttt_budget_steps, 40),
        sweep_values=tuple(full.sweep_values[::2]) or full.sweep_values,
        sweep_steps=min(full.sweep_steps, 40),
        eval_every=min(full.eval_every, 10),
        val_scenes=min(full.val_scenes, 16),
        note="--quick: a smoke run of every stage; the numbers are not converged",
    )


def with_user_settings(budget: SuiteBudget, preset: Preset, overrides: dict[str, Any]) -> SuiteBudget:
    """``budget`` with the fields the user's ``--set`` decides (:data:`BUDGET_FIELDS`) taken from ``preset``."""
    changes = {}
    for key, names in BUDGET_FIELDS.items():
        if key in overrides:
            section, name = key.split(".")
            changes.update(dict.fromkeys(names, getattr(getattr(preset, section), name)))
    return dataclasses.replace(budget, **changes)


@dataclass
class MainJob:
    """One ``gqnbench run``: what to run and where; :meth:`run` executes the remaining stages."""

    preset: str = "cpu"
    out: Path = Path("reports/latest")
    quick: bool = False
    data_root: str | None = None
    models: tuple[str, ...] = MODEL_NAMES
    benchmarks_dir: Path | None = Path("benchmarks")
    cache_root: Path | None = None
    skip: tuple[str, ...] = ()
    command: str = ""
    executor: ClusterExecutor | None = None  # where the training runs go (None: this machine)
    fresh: bool = False  # replace a main job with a different plan in ``out`` (else refuse)
    # ``--set`` overrides for the data, training and samples stages (the cost harnesses measure the
    # preset as registered); validated here, part of the plan a re-run must match.
    user_overrides: dict[str, Any] = field(default_factory=dict)
    budget: SuiteBudget = field(init=False)
    # train.amp=auto resolved once for every run of the job (gqnbench.precision), kept in mainjob.json.
    precision: dict[str, Any] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        unknown = [s for s in self.skip if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) to skip: {unknown}; stages: {', '.join(STAGES)}")
        preset = get_preset(self.preset, self.user_overrides)  # fails early on an unknown preset or field
        for model in self.models:  # and on a model with no config at it (a plugin's)
            preset.model_config(model)
        full = suite_budget(self.preset)
        self.budget = with_user_settings(quick_budget(full) if self.quick else full, preset, self.user_overrides)

    # -- paths and state --------------------------------------------------------------------

    @property
    def results(self) -> Path:
        return self.out / "results"

    def overrides(self) -> dict[str, Any]:
        """What every training, data and samples stage applies to the preset: the budget's, then the user's."""
        extra = dict(self.budget.overrides())
        if self.data_root is not None:
            extra["data.root"] = self.data_root
        extra.update(self.user_overrides)
        if self.precision is not None and extra.get("train.amp") == "auto":
            extra["train.amp_choice"] = json.dumps(self.precision, sort_keys=True)
        return extra

    def _state_path(self) -> Path:
        return self.results / STATE_FILE

    def _load_state(self) -> dict[str, Any]:
        path = self._state_path()
        if not path.exists():
            return {"stages": {}}
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RuntimeError(
                f"{path}: the main job's state file is not valid JSON ({exc}); delete it to start over"
            ) from exc
        if state.get("plan") != self._plan_key() or not isinstance(state.get("stages"), dict):
            # A different preset/quick/data request: earlier stages do not describe this run.
            if not self.fresh:
                old = state.get("plan") if isinstance(state.get("plan"), dict) else {}
                new = self._plan_key()
                diff = [f"{k} {new.get(k)!r} (recorded: {old.get(k)!r})" for k in new if old.get(k) != new.get(k)]
                raise ValueError(
                    f"{self.out} already holds a main job with another plan: {', '.join(diff) or 'unreadable plan'}; "
                    "pass --fresh to replace it, or choose another --out"
                )
            return {"stages": {}}
        return state

    def _plan_key(self) -> dict[str, Any]:
        # Round-tripped through JSON so it compares equal to the copy read back from the state file.
        return json.loads(json.dumps(self._plan(), default=str))

    def _plan(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "quick": self.quick,
            "data_root": self.data_root,
            "models": list(self.models),
            "budget": dataclasses.asdict(self.budget),
            "overrides": dict(self.user_overrides),
        }

    def _save_state(self, state: dict[str, Any]) -> None:
        # A results file of kind "main_job" (atomic), so the report can show what each stage cost.
        doc = {"plan": self._plan_key(), "stages": state["stages"], "precision": state.get("precision")}
        write_result(self._state_path(), "main_job", doc)

    def _resolve_precision(self, state: dict[str, Any], log: Callable[[str], None]) -> None:
        """``train.amp = auto``: measure fp32 against bf16 once for all the job's runs (a re-run keeps the record)."""
        preset = get_preset(self.preset, self.overrides())
        if preset.train.amp != "auto":
            return
        if state.get("precision") is None:
            from gqnbench.precision import choose_precision, describe

            choice = choose_precision(preset, self.models, preset.train.device, num_threads=self.budget.threads)
            state["precision"] = dataclasses.replace(choice, source="main job").as_dict()
            self._save_state(state)
            log(f"[precision] {describe(choice)}")
        self.precision = state["precision"]

    # -- stages -------------------------------------------------------------------------------

    def _stage_data(self) -> str:
        from gqnbench.training.data_source import load_training_data

        preset = get_preset(self.preset, self.overrides())
        data = load_training_data(preset.data, self.cache_root)
        return f"{len(data.train_scenes)} training scenes at {preset.data.image_size}px from {data.root}"

    def _stage_costs(self) -> str:
        from gqnbench.harness.suite import measure_costs

        # --quick leaves out the throughput matrix too; the benchmark stage still times one
        # training step per model. Neither runs the scaling sweep (minutes): `gqnbench costs` does.
        sections = QUICK_COST_SECTIONS if self.quick else DEFAULT_COST_SECTIONS
        path = measure_costs(self.preset, self.models, self.results / "costs.json", quick=True, sections=sections)
        return str(path)

    def _stage_benchmarks(self) -> str:
        if self.benchmarks_dir is None or not Path(self.benchmarks_dir).is_dir():
            return "skipped: no benchmarks/ folder here (run from a source checkout)"
        out = self.results / "benchmarks.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(self.benchmarks_dir),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--benchmark-json={out}",
            "--preset",
            self.preset,
            "--models",
            ",".join(self.models),
        ]
        # The quick matrix (train and inference steps, fp32 and bf16) at the preset's sizes; the
        # --quick job keeps one fp32 training step per model: the smallest honest timing.
        cmd += ["--quick"] + (["-k", "throughput and train and fp32"] if self.quick else [])
        proc = subprocess.run(cmd, check=False)
        if proc.returncode not in (0, 5):
            raise RuntimeError(f"benchmark run failed (exit {proc.returncode}): {shlex.join(cmd)}")
        return str(out)

    def _stage_profile(self) -> str:
        from gqnbench.harness.profile import profile_suite

        # Both models in fp32 and bf16 (folded), a few labelled steps each: "Where the time goes".
        out = self.results / "profile.json"
        path = profile_suite(self.preset, self.models, out, self.quick, overrides=self.overrides())
        return str(path)

    def _stage_time_to_target(self) -> str:
        from gqnbench.training.time_to_target import run_time_to_target

        b = self.budget
        path = run_time_to_target(
            self.preset,
            self.models,
            b.target,
            b.ttt_seeds,
            processes=b.processes,
            threads=b.threads,
            budget_steps=b.ttt_budget_steps,
            stop_at_target=b.ttt_stop_at_target,
            out_dir=self.results / "time_to_target",
            overrides=self.overrides(),
            cache_root=self.cache_root,
            executor=self.executor,
        )
        return str(path)

    def _stage_sweep(self) -> str:
        from gqnbench.training.sweep import run_sweep

        b = self.budget
        ttt_dir = self.results / "time_to_target"
        ttt_file = ttt_dir / "time_to_target.json"
        target = read_result(ttt_file, "time_to_target")["target_nll"] if ttt_file.is_file() else None
        # A main run stands in for a setting only when it is the run the sweep would train: same steps,
        # not stopped at the target. The sweep then only reads it (the time-to-target stage owns it).
        same = b.sweep_steps == b.ttt_budget_steps and not b.ttt_stop_at_target
        reuse = (ttt_dir, "ttt", (0,)) if b.sweep_reuses_main_runs and same else None
        path = run_sweep(
            self.preset,
            self.models,
            b.sweep_field,
            list(b.sweep_values),
            seeds=b.sweep_seeds,
            out_dir=self.results / "sweep",
            steps=b.sweep_steps,
            target_nll=target,
            processes=b.processes,
            threads=b.threads,
            reuse=reuse,
            overrides=self.overrides(),
            cache_root=self.cache_root,
            executor=self.executor,
        )
        return str(path)

    def _stage_samples(self) -> str:
        from gqnbench.training.samples import write_samples

        ttt_dir = self.results / "time_to_target"
        ttt = read_result(ttt_dir / "time_to_target.json", "time_to_target")
        # One prediction per model: its first completed seed; else its first run, which the samples
        # file then lists as left out with the reason (a run that did not complete shows nothing).
        rows = [r for r in ttt["runs"] if r["run_file"]]
        runs = {}
        for row in sorted(rows, key=lambda r: (r.get("status") != "completed", r["seed"])):
            runs.setdefault(row["model"], ttt_dir / row["run_file"])
        path = write_samples(
            get_preset(self.preset, self.overrides()),
            runs,
            self.results / "samples.json",
            cache_root=self.cache_root,
        )
        return str(path)

    def _stage_report(self) -> str:
        from gqnbench.report.build import build_report
        from gqnbench.report.inputs import load_results

        results = load_results([self.results])
        out = build_report(results, self.out, command=self.command or None, title=f"gqnbench report ({self.preset})")
        return str(out.markdown)

    # -- driver -------------------------------------------------------------------------------

    def run(self, log: Callable[[str], None] = print) -> Path:
        """Run every stage not yet finished; returns the report's Markdown path.

        The output folder is owned by this process meanwhile (``OUT/.gqnbench.lock``): a second
        ``gqnbench run`` into it gets :class:`~gqnbench.files.LockedError`."""
        if self.out.exists() and not self.out.is_dir():
            raise NotADirectoryError(f"--out {self.out} is a file, not a folder")
        with hold_lock(self.out / LOCK_NAME, f"output folder {self.out}"):
            return self._run(log)

    def _run(self, log: Callable[[str], None]) -> Path:
        self.results.mkdir(parents=True, exist_ok=True)
        state = self._load_state()
        self._resolve_precision(state, log)
        todo = [s for s in STAGES if s not in self.skip]
        bar = tqdm(
            todo,
            desc=f"gqnbench run ({self.preset}{', quick' if self.quick else ''})",
            unit="stage",
            position=0,
            leave=True,
        )
        unfinished: list[RunsUnfinished] = []  # training stages whose cluster jobs are still out
        ran: set[str] = set()  # stages run in this pass: the stages that read their results run again
        for stage in bar:
            if unfinished and stage not in ("time_to_target", "sweep"):
                break  # later stages need every run
            done = state["stages"].get(stage, {})
            fresh_inputs = ran.intersection(DEPENDS.get(stage, ()))
            if done.get("status") == "done" and stage != "report" and not fresh_inputs:
                bar.write(f"[{stage}] already done ({done.get('wall_s', 0):.0f} s): {done.get('detail', '')}")
                continue
            ran.add(stage)
            bar.set_postfix_str(stage)
            bar.write(f"[{stage}] starting")
            load_before = machine_load()
            start = time.perf_counter()
            status = "done"
            try:
                detail = getattr(self, f"_stage_{stage}")()
            except RunsUnfinished as exc:
                unfinished.append(exc)
                bar.write(f"[{stage}] not finished: {exc}")
                continue
            except RunsFailed as exc:
                # Failed runs: the stage is not done (a rerun retries them). Diverged runs are
                # finished: the stage is done; either way the job ends with exit 1 (see below).
                status = "failed" if exc.failed else "done"
                detail = str(exc) if exc.failed else f"{exc.path} ({exc.summary()})"
            wall = time.perf_counter() - start
            load = load_record(load_before, machine_load())
            state["stages"][stage] = {
                "status": status,
                "wall_s": round(wall, 2),
                "detail": detail,
                "concurrent": load["concurrent"],
                "load": load,
            }
            self._save_state(state)
            bar.write(f"[{stage}] {status} in {wall:.0f} s: {detail}")
            if load["concurrent"]:
                pids = ", ".join(str(p["pid"]) for p in load["other_gqnbench"])
                bar.write(f"[{stage}] note: other gqnbench processes ran meanwhile (pid {pids}); its timings are flagged")
        bar.close()
        if unfinished:
            raise RunsUnfinished.combined(unfinished)
        total = sum(s.get("wall_s", 0) for s in state["stages"].values())
        log(f"report: {self.out / 'report.md'} and {self.out / 'report.html'} (stages took {total:.0f} s in all)")
        if bad := self._not_completed():
            raise RunsFailed(self.results, bad, self.budget.sweep_field)
        return self.out / "report.md"

    def _not_completed(self) -> list[dict[str, Any]]:
        """The training stages' runs that failed or diverged, from their results files (this pass's or an earlier one's)."""
        from gqnbench.training.sweep import sweep_file_name

        files = {
            "time_to_target": (self.results / "time_to_target" / "time_to_target.json", "time_to_target"),
            "sweep": (self.results / "sweep" / sweep_file_name(self.budget.sweep_field), "sweep"),
        }
        rows = []
        for stage, (path, kind) in files.items():
            if stage not in self.skip and path.is_file():
                rows += [r for r in read_result(path, kind)["runs"] if r.get("status") in ("failed", "diverged")]
        return rows
