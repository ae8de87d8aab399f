"""``gqnbench run``: the whole suite on the embedded default (or real data), then the report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from gqnbench.commands.common import add_set_argument, model_choices, not_completed, overrides_from_args
from gqnbench.mainjob import STAGES, MainJob
from gqnbench.presets import MODEL_NAMES
from gqnbench.training.executors import RunsUnfinished, add_executor_arguments, executor_from_args
from gqnbench.training.run_files import RunsFailed


def _run(args: argparse.Namespace) -> int:
    job = MainJob(
        preset=args.preset,
        out=Path(args.out),
        quick=args.quick,
        data_root=args.data,
        models=tuple(args.models),
        benchmarks_dir=Path(args.benchmarks),
        cache_root=Path(args.cache) if args.cache else None,
        skip=tuple(args.skip),
        command=shlex.join(["gqnbench", *sys.argv[1:]]),
        executor=executor_from_args(args),
        fresh=args.fresh,
        user_overrides=overrides_from_args(args),
    )
    try:
        job.run()
    except RunsUnfinished as exc:
        print(f"training jobs not finished yet: {exc}")
        return exc.exit_status
    except RunsFailed as exc:
        return not_completed("run", exc)
    return 0


def _report(args: argparse.Namespace) -> int:
    from gqnbench.report.cli import main as report_main

    return report_main(args.report_args)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the main job: data, costs, benchmarks, time to target, latent sweep, samples, report",
        description="Runs the whole suite and writes a report. Re-running the same command continues "
        "where an interrupted run stopped.",
    )
    p.add_argument("--preset", default="cpu", help="size preset (default cpu; paper needs a GPU)")
    p.add_argument("--quick", action="store_true", help="a smoke run of every stage (< 3 min on 2 cores)")
    p.add_argument(
        "--data", default=None, metavar="DIR", help="a DeepMind-format data root (default: the embedded set)"
    )
    p.add_argument("--out", default="reports/latest", help="report folder (results go to OUT/results)")
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=model_choices())
    p.add_argument("--benchmarks", default="benchmarks", help="the pytest-benchmark suite folder")
    p.add_argument("--cache", default=None, help="where the generated data set is cached (default ~/.cache/gqnbench)")
    p.add_argument("--skip", nargs="*", default=[], choices=list(STAGES), help="stages to leave out")
    p.add_argument("--fresh", action="store_true", help="replace a main job with another plan in --out")
    add_set_argument(
        p,
        help="override a preset field for the data, training and samples stages, e.g. --set train.lr_start=5e-4 "
        "(repeatable; the cost stages measure the preset as registered)",
    )
    add_executor_arguments(p)
    p.set_defaults(func=_run)

    r = subparsers.add_parser("report", help="same as python -m gqnbench.report", add_help=False)
    r.add_argument("report_args", nargs=argparse.REMAINDER)
    r.set_defaults(func=_report)
