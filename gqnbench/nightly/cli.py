"""The command line of the nightly gate (``python ci/nightly.py`` or ``python -m gqnbench.nightly.cli``).

Run the benchmarks + a short training run, compare with a pinned baseline.

Commands (exit codes: 0 pass, 1 regression or failed step, 2 bad input, 3 no baseline):

    python ci/nightly.py run --device cuda|cpu --out DIR [--quick]   # bench, train, report, check
    python ci/nightly.py check --current DIR [--baseline FILE|DIR]   # compare two existing runs
    python ci/nightly.py baseline --from DIR [DIR...] [--device-name NAME]    # pin as ci/baselines/<NAME>.json

Baselines live in ci/baselines/<device name>.json (GPU model slug, or cpu-<CPU model slug>);
thresholds in ci/thresholds.json. See ci/README.md.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from gqnbench.files import atomic_write_text
from gqnbench.nightly import DEFAULT_THRESHOLDS, EXIT_BAD_INPUT, EXIT_NO_BASELINE, EXIT_OK, EXIT_REGRESSION
from gqnbench.nightly.collect import (
    CollectError,
    MissingBaselineError,
    RunMetrics,
    baseline_path,
    collect_run,
    compare_as,
    median_run,
    missing_baseline_message,
    write_baseline,
)
from gqnbench.nightly.device import describe_host, device_slug, host_info, slugify
from gqnbench.nightly.gate import busy_note, check, usable_cpus
from gqnbench.nightly.render import fmt_value, render_table, write_verdict
from gqnbench.nightly.schema import NightlyVerdict, write_doc
from gqnbench.nightly.thresholds import ThresholdsError, load_thresholds
from gqnbench.results import ResultsError

VERDICT_FILE = "verdict.json"


def resolve_device_name(explicit: str | None, run: RunMetrics) -> str:
    """Baseline name: explicit > the run's manifest > models recorded in its files > this machine."""
    if explicit:
        return explicit if re.fullmatch(r"[a-z0-9][a-z0-9._-]*", explicit) else slugify(explicit)
    if run.device_name:
        return run.device_name
    device = run.device or "cpu"
    if device.startswith("cuda") and run.gpu_name:
        return slugify(run.gpu_name)
    if device == "cpu" and run.cpu_model:
        return "cpu-" + slugify(run.cpu_model)
    return device_slug(device)


def do_check(current: RunMetrics, args: argparse.Namespace, device_name: str | None, verdict_path: Path | None) -> int:
    """Check ``current`` with the check options of ``args`` (--baseline, --thresholds, --allow-missing)."""
    name = resolve_device_name(device_name, current)
    current.device_name = current.device_name or name
    thresholds = load_thresholds(args.thresholds)
    expected = args.baseline or baseline_path(name)
    if not expected.exists():
        return _no_baseline(current, expected, name, args.baseline is not None, verdict_path)
    baseline = collect_run(expected)
    if args.as_model:
        variant, _, model = args.as_model.partition("=")
        if not (variant and model):
            raise CollectError(f"--as-model: expected VARIANT=MODEL (e.g. myvariant=gqn), got {args.as_model!r}")
        compare_as(current, baseline, variant, model)
    verdict = check(current, baseline, thresholds, allow_missing=args.allow_missing)
    if args.as_model:
        verdict.warnings.insert(0, f"{variant}'s rows are judged against the baseline's {model} rows (--as-model)")
    print(render_table(verdict), end="")
    if verdict_path is not None:
        write_verdict(verdict, verdict_path, environment=current.environment)
        print(f"verdict written to {verdict_path} (and {verdict_path.with_suffix('.txt').name})")
    return verdict.exit_code


def _no_baseline(current: RunMetrics, expected: Path, name: str, explicit: bool, verdict_path: Path | None) -> int:
    """Say which baseline file is missing and how to pin one; failed steps still fail the run."""
    lines = [missing_baseline_message(expected, current.source, name, out=expected if explicit else None)]
    failed = current.failed_steps()
    for s in current.steps:
        if s.rc not in (0, None):
            gate = "" if s in failed else ", does not gate"
            lines.append(f"also: step {s.name} exited {s.rc} (log {s.log}{gate})")
    text = "\n".join(lines)
    print(text, file=sys.stderr)
    code = EXIT_REGRESSION if failed else EXIT_NO_BASELINE
    if verdict_path is not None:
        doc = NightlyVerdict(passed=False, exit_code=code, current=current.source, expected_baseline=str(expected),
                             device_name=name, message=text)  # fmt: skip
        write_doc(verdict_path, doc, environment=current.environment)
        atomic_write_text(verdict_path.with_suffix(".txt"), text + "\n")
    return code


def cmd_check(args: argparse.Namespace) -> int:
    current = collect_run(args.current)
    verdict_path = args.verdict
    if verdict_path is None and Path(args.current).is_dir():
        verdict_path = Path(args.current) / VERDICT_FILE
    return do_check(current, args, args.device_name, verdict_path)


def cmd_baseline(args: argparse.Namespace) -> int:
    run = median_run([collect_run(d) for d in args.from_dir])
    name = resolve_device_name(args.device_name, run)
    run.device_name = name
    path = args.out or baseline_path(name)
    thresholds = load_thresholds(args.thresholds)
    cpus = usable_cpus(run)
    busy = {k: note for k, m in run.of_category("ratio").items() if (note := busy_note(m, cpus, thresholds))}
    if busy and not args.force:
        shown = "; ".join(f"{k} ({note})" for k, note in sorted(busy.items())[:3])
        raise CollectError(
            f"{run.source}: refusing to pin ratios measured on a busy host: {len(busy)} row(s), e.g. {shown}; "
            "measure again on a quiet host (or use --force)"
        )
    write_baseline(run, path, force=args.force)
    print(f"pinned baseline {path} for device '{name}' from {run.source}:")
    print(f"  host: {describe_host(run.host)}")
    for key, m in sorted(run.metrics.items()):
        spread = f" (IQR/median {m.spread:.3g}, {m.rounds} rounds)" if m.spread is not None else ""
        print(f"  {key}: {fmt_value(m.value, m.unit)}{spread}")
    benches, ratios = len(run.of_category("time")), len(run.of_category("ratio"))
    training = len(run.of_category("nll"))
    print(f"{benches} benchmark(s) ({ratios} with a ratio to the reference), {training} training run(s). "
          f"Commit {path} to use it.")  # fmt: skip
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from gqnbench.environment import capture_environment
    from gqnbench.nightly.runner import STEPS, execute, make_plan

    bad = set(args.skip) - set(STEPS)
    if bad:
        raise CollectError(f"--skip: unknown step(s) {sorted(bad)}; steps: {', '.join(STEPS)}")
    plan = make_plan(
        args.device,
        Path(args.out),
        args.quick,
        bench_presets=tuple(args.preset or ()),
        bench_dir=args.bench_dir,
        bench_args=tuple(shlex.split(args.bench_args or "")),
        models=tuple(m for m in (args.models or "").split(",") if m),
        train_preset=args.train_preset,
        train_steps=args.train_steps,
        seed=args.seed,
        train_args=tuple(shlex.split(args.train_args or "")),
        skip=tuple(args.skip),
        timeout_s=args.step_timeout,
    )
    environment = capture_environment(plan.device, None)
    host = host_info(plan.device)
    if args.device_name:
        name = args.device_name
    elif plan.device.startswith("cuda"):
        name = device_slug(plan.device, gpu_name=environment.get("gpu_name"))
    else:
        name = device_slug("cpu")
    print(f"nightly run: device {plan.device} ('{name}'), out {plan.out}, quick={plan.quick}")
    print(f"host: {describe_host(host)}")
    try:
        state = execute(plan, name, environment, host)
    except KeyboardInterrupt:
        print(f"\ninterrupted; what ran so far is recorded in {plan.out / 'nightly.json'}", file=sys.stderr)
        return 130
    for s in state.steps:
        status = "skipped" if s.rc is None else f"exit {s.rc}"
        print(f"  step {s.name}: {status} ({s.wall_s:.1f} s){' - ' + s.note if s.note else ''}")
    if "check" in plan.skip:
        return EXIT_REGRESSION if any(s.gates and s.rc not in (0, None) for s in state.steps) else EXIT_OK
    return do_check(collect_run(plan.out), args, name, plan.out / VERDICT_FILE)


def _add_check_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="baseline file, another run folder or a pytest-benchmark JSON (default ci/baselines/<device name>.json)",
    )
    p.add_argument(
        "--thresholds",
        type=Path,
        default=DEFAULT_THRESHOLDS,
        help=f"thresholds JSON (default {DEFAULT_THRESHOLDS})",
    )
    p.add_argument(
        "--allow-missing", action="store_true", help="benchmarks in the baseline but not in this run do not gate"
    )
    p.add_argument(
        "--as-model",
        default=None,
        metavar="VARIANT=MODEL",
        help="judge model VARIANT's rows (a plugin) against the baseline's rows of MODEL",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nightly.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run benchmarks, a short training run and the report, then check")
    run.add_argument(
        "--device", required=True, choices=("cuda", "cpu"), help="cuda or cpu (pick a GPU with CUDA_VISIBLE_DEVICES)"
    )
    run.add_argument("--out", required=True, help="output folder for this run")
    run.add_argument("--quick", action="store_true", help="the small matrix (passes --quick to the benchmarks)")
    run.add_argument("--preset", action="append", help="benchmark preset (repeatable; default per device)")
    run.add_argument("--bench-dir", default="benchmarks", help="pytest benchmark folder (default benchmarks)")
    run.add_argument("--bench-args", default=None, help='extra pytest arguments, e.g. --bench-args="-k gqn"')
    run.add_argument("--models", default=None, help="models to train, comma-separated (default gqn,metagqn)")
    run.add_argument("--train-preset", default=None, help="preset of the training check (default per device)")
    run.add_argument("--train-steps", type=int, default=None, help="steps of the training check (default per device)")
    run.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    run.add_argument("--train-args", default=None, help='extra "gqnbench train" arguments')
    run.add_argument("--skip", action="append", default=[], help="skip a step: bench, train, report, check")
    run.add_argument("--step-timeout", type=float, default=None, help="seconds before a step is killed")
    run.add_argument("--device-name", default=None, help="override the detected device name")
    _add_check_options(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="compare a run with a pinned baseline (or with another run)")
    check.add_argument("--current", required=True, help="run folder or pytest-benchmark JSON")
    check.add_argument("--device-name", default=None, help="baseline name when the run does not record one")
    check.add_argument("--verdict", type=Path, default=None, help="verdict JSON path (default CURRENT/verdict.json)")
    _add_check_options(check)
    check.set_defaults(func=cmd_check)

    base = sub.add_parser("baseline", help="pin a run as the baseline for its device (on purpose)")
    base.add_argument(
        "--from", dest="from_dir", nargs="+", required=True,
        help="run folder(s) (or baseline file) to pin; several runs of one commit: each metric their median",
    )  # fmt: skip
    base.add_argument("--device-name", default=None, help="baseline name (default: the run's device name)")
    base.add_argument("--out", type=Path, default=None, help="baseline file (default ci/baselines/<name>.json)")
    base.add_argument(
        "--force", action="store_true", help="pin even if a step failed, a training run diverged or the host was busy"
    )
    base.add_argument(
        "--thresholds", type=Path, default=DEFAULT_THRESHOLDS, help="thresholds JSON (its busy limit; default ci/)"
    )
    base.set_defaults(func=cmd_baseline)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CollectError, ThresholdsError, ResultsError, MissingBaselineError, RuntimeError, ValueError) as exc:
        print(f"nightly.py {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
