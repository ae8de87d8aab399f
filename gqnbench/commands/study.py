"""``gqnbench learning-study``: train both models at every configuration of the learning study.

Example::

    gqnbench learning-study --out results/study --steps 6000 --processes 2      # the whole grid
    gqnbench learning-study --entries s16-base s16-lr2e-3 --steps 3000 --device cuda --processes 8
    gqnbench learning-study --entries s16-base --set data.generate_scenes=3000   # under every entry
"""

from __future__ import annotations

import argparse

from gqnbench.commands.common import add_preset_arguments, overrides_from_args
from gqnbench.commands.tables import print_table

# Every column but the entry's name, model and status holds a number.
_NUMBERS = {"MSE ratio", "fg ratio", "MSE ratio (z mean)", "fg ratio (z mean)", "steps/s"}


def _row(e: dict) -> dict:
    f = e["final"]
    return {
        "entry": e["name"],
        "model": e["model"],
        "MSE ratio": f"{f['mse_ratio']:.3f}",
        "fg ratio": f"{f['fg_ratio']:.3f}",
        "MSE ratio (z mean)": f"{f['mse_ratio_zmean']:.3f}",
        "fg ratio (z mean)": f"{f['fg_ratio_zmean']:.3f}",
        "steps/s": f"{e['steps_per_s'] or 0:.1f}",
        "status": e["status"],
    }


def _study(args: argparse.Namespace) -> int:
    from gqnbench.results import read_result
    from gqnbench.training.learning_study import run_learning_study, study_entries

    path = run_learning_study(
        args.preset,
        args.out,
        entries=study_entries(args.entries),
        models=args.models,
        steps=args.steps,
        eval_every=args.eval_every,
        val_scenes=args.val_scenes,
        device=args.device,
        amp=args.amp,
        processes=args.processes,
        threads=args.threads,
        max_seconds=args.max_seconds,
        cache_root=args.data_cache,
        progress=not args.no_progress,
        overrides=overrides_from_args(args),
    )
    doc = read_result(path, "learning_study")
    title = f"learning study ({doc['steps']} steps; MSE and foreground MSE relative to the mean frame, z sampled)"
    print_table([_row(e) for e in doc["entries"]], title=title, right=_NUMBERS)
    print(f"-> {path}")
    return 0


def register(subparsers) -> None:  # noqa: ANN001
    from gqnbench.commands.common import model_choices
    from gqnbench.presets import MODEL_NAMES

    p = subparsers.add_parser("learning-study", help="which small configuration learns within a CPU budget")
    add_preset_arguments(p)  # the entries' own overrides apply on top of --preset and --set
    p.add_argument("--entries", nargs="*", default=None, help="study entries to run (default: all)")
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=model_choices())
    p.add_argument("--steps", type=int, default=6000, help="steps per run (default 6000)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--val-scenes", type=int, default=120, help="validation scenes (default 120, the whole test split)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (train.device)")
    p.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"))
    p.add_argument("--processes", type=int, default=1, help="runs in parallel (one-thread processes on a CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default cores/processes)")
    p.add_argument("--max-seconds", type=float, default=None, help="wall-clock cap per run")
    p.add_argument("--out", default="results/learning_study")
    p.add_argument("--data-cache", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_study)
