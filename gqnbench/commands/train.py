"""``gqnbench train``, ``time-to-target``, ``sweep`` and ``samples``: the training engine's commands.

Examples::

    gqnbench train --model gqn --preset cpu --steps 2000 --out results        # Ctrl-C, then --resume
    gqnbench train --model metagqn --preset cpu --amp bf16 --resume
    torchrun --nproc_per_node=2 -m gqnbench train --model gqn --preset cpu  # DDP (gloo on CPU)
    gqnbench time-to-target --models gqn metagqn --target 1450 --seeds 3 --budget 600
    gqnbench time-to-target --models gqn metagqn --seeds 3 --budget 300s   # seconds budget, default target
    gqnbench sweep --models gqn metagqn --z-channels 3 32 128 --steps 300 --processes 2
    gqnbench sweep --models gqn --field train.lr_start --values 1e-4 5e-4 2e-3
    gqnbench sweep --preset paper --z-channels 3 32 128 --executor slurm --partition gpu --gpus-per-run 1
    gqnbench samples results/runs/gqn-cpu-seed0.pt results/runs/metagqn-cpu-seed0.pt --out results/samples.json
"""

from __future__ import annotations

import argparse
import re
import sys

from gqnbench.commands.common import add_preset_arguments, model_choices, not_completed, preset_from_args
from gqnbench.training.executors import RunsUnfinished, add_executor_arguments, executor_from_args
from gqnbench.training.run_files import RunsFailed


def parse_budget(text: str) -> tuple[int | None, float | None]:
    """``"500"`` -> 500 steps; ``"300s"``, ``"5m"``, ``"1.5h"`` -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not m:
        raise ValueError(f"--budget {text!r}: use a step count (500) or a time (300s, 5m, 1h)")
    number, unit = float(m.group(1)), m.group(2)
    if not unit:
        if not number.is_integer() or number < 1:
            raise ValueError(f"--budget {text!r}: a step budget must be a positive whole number")
        return int(number), None
    return None, number * {"s": 1, "m": 60, "h": 3600}[unit]


def _num(value: object, digits: int = 1) -> str:
    """A results-file number for the terminal ("inf" strings and nulls included)."""
    if value is None or isinstance(value, str):
        return str(value)
    return f"{float(value):.{digits}f}"


def _common(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--out", default="results", help="output folder (default results/)")
    parser.add_argument(
        "--amp", choices=("off", "fp32", "bf16", "fp16", "auto"), default=None,
        help="training precision (train.amp): fp32 (= off), bf16 or fp16 autocast, or auto (whichever this host "
        "runs faster and passes the numerics check; gqnbench.precision)",
    )  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step (train.compile)")
    parser.add_argument(
        "--data-cache",
        default=None,
        help="where the generated data set lives (default $GQNBENCH_CACHE or ~/.cache/gqnbench)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _overrides(args: argparse.Namespace) -> None:
    if getattr(args, "compress_to", None):
        from gqnbench.presets import compressed_schedules

        # Before the user's own --set, which win.
        args.overrides[:0] = [f"{k}={v}" for k, v in compressed_schedules(args.compress_to).items()]
    if args.amp:
        args.overrides.append(f"train.amp={args.amp}")
    if args.compile:
        args.overrides.append("train.compile=true")


def _default_tag(args: argparse.Namespace) -> str:
    """The preset name, plus a short hash of the overrides so differently configured runs do not collide."""
    if not args.overrides:
        return args.preset
    import hashlib

    digest = hashlib.sha1("\n".join(sorted(args.overrides)).encode()).hexdigest()[:8]
    return f"{args.preset}-{digest}"


def _train(args: argparse.Namespace) -> int:
    from gqnbench.training import distributed as D
    from gqnbench.training.loop import train

    if args.resume and args.fresh:
        raise ValueError("give --resume (continue the run) or --fresh (replace it), not both")
    _overrides(args)
    preset = preset_from_args(args)
    if preset.train.flush_denormal:
        from gqnbench.step import flush_denormals_for_process

        flush_denormals_for_process()  # before any torch op, so every intra-op thread gets it
    ctx = D.init_distributed(preset.train.device)
    try:
        result = train(
            preset,
            args.model,
            args.out,
            tag=args.tag or _default_tag(args),
            seed=args.seed,
            steps=args.steps,
            resume=True if args.resume else (False if args.fresh else None),
            cache_root=args.data_cache,
            target_nll=args.target,
            max_seconds=args.max_seconds,
            progress=not args.no_progress,
            dist_ctx=ctx,
        )
    finally:
        D.shutdown(ctx)
    if ctx.is_main:
        doc = result.doc
        final = doc["final"]
        note = " (finished earlier; reused)" if result.skipped else ""
        if doc["status"] == "diverged":
            # One step number: the update that diverged; the last evaluation is named as such.
            print(
                f"{doc['model']}: diverged{note} at step {doc['diverged_step']}: {doc['diverged_reason']}; "
                f"last evaluation (step {final['step']}): val NLL {final['val_nll']:.1f} nats/image; -> {result.run_file}"
            )
        else:
            print(
                f"{doc['model']}: {doc['status']}{note} at step {final['step']}: val NLL {final['val_nll']:.1f} "
                f"nats/image (MSE {final['val_mse']:.4f}, constant {final['nll_constant']:.1f}); "
                f"{doc['steps_per_s'] or float('nan'):.2f} steps/s; -> {result.run_file}"
            )
        if doc.get("concurrent"):
            print("  note: another gqnbench process ran on this machine meanwhile; the timings are not clean")
    return 0 if result.doc["status"] == "completed" else 1


def _print_unfinished(doc: dict) -> None:
    for r in doc.get("unfinished_runs", []):
        what = " ".join(f"{k} {r[k]}" for k in ("value", "seed") if k in r)
        error = f": {r['error']}" if r.get("error") else ""
        print(f"  {r['model']} {what}: {r['state']} (job {r['job_id']}){error}")


def _finish(command: str, path, unfinished: RunsUnfinished | None, failed: RunsFailed | None) -> int:  # noqa: ANN001
    """The exit status: 3 while cluster jobs are out, 1 when a run failed or diverged, else 0."""
    print(f"-> {path}")
    if unfinished is not None:
        print(f"not finished yet: {unfinished}")
        return unfinished.exit_status
    return not_completed(command, failed) if failed is not None else 0


def _time_to_target(args: argparse.Namespace) -> int:
    from gqnbench.results import read_result
    from gqnbench.training.time_to_target import run_time_to_target

    _overrides(args)
    preset = preset_from_args(args)
    executor = executor_from_args(args)
    steps, seconds = parse_budget(args.budget) if args.budget else (None, None)
    unfinished = failed = None
    try:
        path = run_time_to_target(
            preset,
            args.models,
            args.target,
            args.seeds,
            budget_steps=steps,
            budget_seconds=seconds,
            out_dir=args.out,
            resume=not args.no_resume,
            cache_root=args.data_cache,
            progress=not args.no_progress,
            executor=executor,
        )
    except RunsUnfinished as exc:
        path, unfinished = exc.path, exc
    except RunsFailed as exc:
        path, failed = exc.path, exc
    doc = read_result(path, "time_to_target")
    print(f"time to val NLL <= {doc['target_nll']:.1f} nats/image ({doc['preset']}, budget {doc['budget']}):")
    for model, s in doc["summary"].items():
        left = f"; {s['unfinished']} not finished" if s.get("unfinished") else ""
        left += f"; {s['failed']} failed" if s.get("failed") else ""
        print(
            f"  {model}: median {s['median_wall_s']} s, {s['median_steps']} steps; "
            f"reached {s['reached']}/{s['total']}{left}"
        )
    _print_unfinished(doc)
    return _finish("time-to-target", path, unfinished, failed)


def _sweep(args: argparse.Namespace) -> int:
    from gqnbench.results import read_result
    from gqnbench.training.sweep import run_sweep

    _overrides(args)
    field, values = _sweep_axis(args)
    from gqnbench.config import parse_override_strings

    executor = executor_from_args(args)
    unfinished = failed = None
    try:
        path = run_sweep(
            args.preset,
            args.models,
            field,
            values,
            args.seeds,
            out_dir=args.out,
            steps=args.steps,
            target_nll=args.target,
            processes=args.processes,
            resume=not args.no_resume,
            overrides=parse_override_strings(args.overrides),
            cache_root=args.data_cache,
            progress=not args.no_progress,
            executor=executor,
        )
    except RunsUnfinished as exc:
        path, unfinished = exc.path, exc
    except RunsFailed as exc:
        path, failed = exc.path, exc
    _print_sweep(read_result(path, "sweep"))
    return _finish("sweep", path, unfinished, failed)


def _sweep_axis(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The swept field and its values: --z-channels is shorthand for --field model.z_channels."""
    if args.z_channels is not None:
        if args.field not in (None, "model.z_channels"):
            raise ValueError("give either --z-channels or --field/--values, not both")
        return "model.z_channels", [str(v) for v in args.z_channels]
    if args.field and args.values:
        return args.field, args.values
    raise ValueError("say what to sweep: --z-channels 3 32 128, or --field train.lr_start --values 1e-4 5e-4")


def _print_sweep(doc: dict) -> None:
    print(f"sweep of {doc['field']} over {doc['values']} ({doc['preset']}, {doc['steps']} steps):")
    for r in doc["runs"]:
        extra = f", diverged at step {r['diverged_step']}" if r["diverged"] else ""
        extra += f", failed: {r.get('error')}" if r["status"] == "failed" else ""
        print(
            f"  {r['model']} {r['value']} seed {r['seed']}: final val NLL {_num(r['final_val_nll'])}, "
            f"learned {r['learned']}, improved {r.get('improved')}{extra}"
        )
    _print_unfinished(doc)
    for model, s in doc["summary"].items():
        left = f"; {s['unfinished']} not finished" if s.get("unfinished") else ""
        left += f"; {s['failed']} failed" if s.get("failed") else ""
        print(
            f"  {model}: final NLL spread {_num(s['final_nll_spread'])}, median {_num(s['final_nll_median'])}, "
            f"learned {_num(s['fraction_learned'], 2)}, improved {_num(s.get('fraction_improved'), 2)}{left}"
        )


def _samples(args: argparse.Namespace) -> int:
    from gqnbench.results import read_result
    from gqnbench.training.samples import write_samples

    preset = preset_from_args(args)
    path = write_samples(preset, args.runs, args.out, num_scenes=args.num_scenes, cache_root=args.data_cache)
    print(f"-> {path}")
    left_out = read_result(path, "samples")["left_out"]
    for label, reason in left_out.items():
        print(f"gqnbench samples: {label} not shown (the run did not complete): {reason}", file=sys.stderr)
    return 1 if left_out else 0


def register(subparsers) -> None:  # noqa: ANN001
    for add in (_add_train, _add_time_to_target, _add_sweep, _add_samples):
        add(subparsers)


def _add_train(subparsers) -> None:  # noqa: ANN001
    t = subparsers.add_parser("train", help="train one model (resumable; works under torchrun for DDP)")
    t.add_argument("--model", required=True, choices=model_choices())
    t.add_argument("--steps", type=int, default=None, help="total training steps (default: the preset's)")
    t.add_argument("--seed", type=int, default=None, help="seed for weights, batches and z noise (default 0)")
    t.add_argument("--tag", default=None, help="run label in file names (default: the preset name)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue this run from its checkpoint even if it finished with other settings (e.g. more --steps); "
        "without it an unfinished run continues and a finished one with the same settings is reused",
    )
    t.add_argument("--fresh", action="store_true", help="start over, replacing this run if it exists")
    t.add_argument("--target", type=float, default=None, help="stop once the val NLL is <= this (nats/image)")
    t.add_argument(
        "--max-seconds", type=float, default=None,
        help="stop once the training wall clock passes this (status completed, stop reason time_budget)",
    )  # fmt: skip
    t.add_argument(
        "--compress-to", type=int, default=None, metavar="STEPS",
        help="train STEPS steps with the schedules compressed to them (GQN's sigma anneal, evaluations; "
        "gqnbench.presets.compressed_schedules), as the cpu and paper-short presets are",
    )  # fmt: skip
    _common(t)
    t.set_defaults(func=_train)


def _add_time_to_target(subparsers) -> None:  # noqa: ANN001
    from gqnbench.presets import MODEL_NAMES

    g = subparsers.add_parser("time-to-target", help="MLPerf-style wall clock to a target validation NLL")
    g.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=model_choices())
    g.add_argument("--target", type=float, default=None, help="val NLL in nats/image (default: the preset's)")
    g.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model (default 3)")
    g.add_argument("--budget", default=None, help="steps (500) or wall time (300s, 5m) per run (default: preset steps)")
    g.add_argument("--no-resume", action="store_true", help="retrain runs that already finished")
    _common(g)
    add_executor_arguments(g)
    g.set_defaults(func=_time_to_target)


def _add_sweep(subparsers) -> None:  # noqa: ANN001
    from gqnbench.presets import MODEL_NAMES

    s = subparsers.add_parser("sweep", help="robustness sweep over one config field")
    s.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=model_choices())
    s.add_argument("--z-channels", type=int, nargs="+", default=None, help="shorthand for --field model.z_channels")
    s.add_argument("--field", default=None, help="any SECTION.FIELD, e.g. train.lr_start, gqn.num_layers")
    s.add_argument("--values", nargs="+", default=None, help="values of --field")
    s.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per setting (default 1)")
    s.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's)")
    s.add_argument("--target", type=float, default=None, help="also report whether each run reached this val NLL")
    s.add_argument("--processes", type=int, default=1, help="runs in parallel, threads split between them")
    s.add_argument("--no-resume", action="store_true", help="retrain runs that already finished")
    _common(s)
    add_executor_arguments(s)
    s.set_defaults(func=_sweep)


def _add_samples(subparsers) -> None:  # noqa: ANN001
    p = subparsers.add_parser("samples", help="prediction grids from trained weights (for the report)")
    p.add_argument("runs", nargs="+", help="weights (.pt) or training_run (.json) files")
    p.add_argument("--out", required=True, help="samples JSON file to write")
    p.add_argument("--num-scenes", type=int, default=4)
    p.add_argument("--data-cache", default=None)
    add_preset_arguments(p)
    p.set_defaults(func=_samples)
