"""The cost harness commands: ``costs`` (everything, one results file) and one command per harness.

Examples::

    gqnbench costs --preset cpu --out results/costs.json [--quick]
    gqnbench params --preset paper                 # both counting ways, per module
    gqnbench flops --preset paper                  # FlopCounterMode fwd / fwd+bwd, fvcore MACs
    gqnbench memory --model gqn --preset cpu --dtype bf16
    gqnbench throughput --models gqn metagqn --preset cpu --dtypes fp32 bf16 --compile both
    gqnbench numerics --model gqn --preset tiny --dtype bf16 [--compile]
    gqnbench scaling --models gqn --preset cpu --axis L --values 2 4 8
    gqnbench profile --model gqn --preset cpu --out results/profile   # phase table + trace + profile.json
    gqnbench perf-targets                           # issue 5's targets, paper GQN at batch 8 (minutes)
"""

from __future__ import annotations

import argparse
import json

from gqnbench.commands.common import add_preset_arguments, model_choices, preset_from_args
from gqnbench.config import parse_override_strings
from gqnbench.presets import MODEL_NAMES

DTYPES = ("fp32", "bf16", "fp16")


def _overrides(args: argparse.Namespace) -> tuple:
    return tuple(parse_override_strings(args.overrides).items())


def _write(args: argparse.Namespace, payload: dict) -> None:
    """Write ``payload`` as a ``costs`` results file when ``--out`` was given."""
    if getattr(args, "out", None):
        from gqnbench.results import capture_environment, write_result

        path = write_result(
            args.out, "costs", {"preset": args.preset, **payload}, capture_environment(getattr(args, "device", None))
        )
        print(f"wrote {path}")


def _gb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e9:.3f}"


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


# --- costs -----------------------------------------------------------------------------------------------------


def _run_costs(args: argparse.Namespace) -> int:
    from gqnbench.harness.suite import measure_costs

    path = measure_costs(
        args.preset,
        models=args.models,
        out_path=args.out,
        quick=args.quick,
        device=args.device,
        resume=not args.no_resume,
        sections=args.sections,
    )
    print(f"wrote {path}")
    return 0


# --- params ----------------------------------------------------------------------------------------------------


def _run_params(args: argparse.Namespace) -> int:
    from gqnbench.harness.params import parameter_report

    preset = preset_from_args(args)
    reports = {m: parameter_report(m, preset, authors_layout=not args.objective_layout) for m in args.models}
    for model, rep in reports.items():
        print(
            f"{model} ({args.preset}): {rep['total']:,} parameters, {rep['used_by_objective']:,} receive a gradient "
            f"in one training step, {rep['unused']:,} never do"
        )
        print(f"  {'module':<20} {'total':>13} {'used':>13}")
        for name, counts in rep["per_module"].items():
            print(f"  {name:<20} {counts['total']:>13,} {counts['used']:>13,}")
    _write(args, {"params": reports})
    return 0


# --- flops -----------------------------------------------------------------------------------------------------


def _run_flops(args: argparse.Namespace) -> int:
    from gqnbench.harness.flops import flop_report

    preset = preset_from_args(args)
    reports = {
        m: flop_report(m, preset, num_context=args.context, num_queries=args.queries, fvcore=not args.no_fvcore)
        for m in args.models
    }
    for model, rep in reports.items():
        print(
            f"{model} ({args.preset}, {args.context} context views): per scene "
            f"forward {_gb(rep['forward_per_scene'])} GFLOP, forward+backward {_gb(rep['train_per_scene'])} GFLOP "
            f"({rep['train_to_forward']:.2f}x), predict {_gb(rep['infer_per_scene'])} GFLOP  [FLOP = 2 x MAC]"
        )
        if "fvcore_forward_macs_per_scene" in rep:
            print(
                f"  fvcore forward: {_gb(rep['fvcore_forward_macs_per_scene'])} GMAC conv/matmul "
                f"(x2 = {_gb(2 * rep['fvcore_forward_macs_per_scene'])} GFLOP), "
                f"{rep['fvcore_elementwise_ops_per_scene'] / 1e6:.2f} M elementwise ops"
            )
        print(f"  {'module':<20} {'fwd GFLOP':>10} {'fwd+bwd GFLOP':>14}")
        for name, v in rep["per_module"].items():
            print(f"  {name:<20} {_gb(v['forward']):>10} {_gb(v['train']):>14}")
    _write(args, {"flops": reports})
    return 0


# --- memory ----------------------------------------------------------------------------------------------------


def _run_memory(args: argparse.Namespace) -> int:
    from gqnbench.harness.common import StepSpec
    from gqnbench.harness.memory import measure_memory

    modes = ("train", "infer") if args.mode == "both" else (args.mode,)
    out: dict = {}
    for model in args.models:
        out[model] = {}
        for mode in modes:
            spec = StepSpec(
                model, args.preset, mode, args.batch, args.dtype, device=args.device, overrides=_overrides(args)
            )
            row = measure_memory(spec)
            out[model][mode] = row
            if "peak_rss_bytes" in row:
                print(
                    f"{model} {mode} b{row['batch']} {args.dtype}: peak RSS {_mib(row['peak_rss_bytes'])} MiB "
                    f"(step adds {_mib(row['step_rss_increase_bytes'])} MiB over {_mib(row['baseline_rss_bytes'])} "
                    f"MiB resident; runtime alone {_mib(row['runtime_rss_bytes'])} MiB), fresh process"
                )
            else:
                print(
                    f"{model} {mode} b{row['batch']} {args.dtype}: CUDA peak allocated "
                    f"{_mib(row['peak_allocated_bytes'])} MiB, reserved {_mib(row['peak_reserved_bytes'])} MiB"
                )
            print(f"  NVML: {json.dumps(row['nvml'])}")
    _write(args, {"device": args.device, "memory": out})
    return 0


# --- throughput ------------------------------------------------------------------------------------------------


def _print_rows(rows: list[dict]) -> None:
    print(
        f"{'case':<52} {'median s':>9} {'IQR/med':>8} {'img/s':>8} {'GFLOP/s':>8} {'MFU':>6} {'compile s':>9} {'breaks':>6}"
    )
    for r in rows:
        name = f"{r['mode']}-{r['model']}-b{r['batch']}-{r['dtype']}-{'compiled' if r['compiled'] else 'eager'}"
        if r.get("channels_last"):
            name += "-cl"
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        comp = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        breaks = "-" if r["graph_breaks"] is None else str(r["graph_breaks"])
        print(
            f"{name:<52} {r['median_s']:>9.4f} {r['rel_iqr']:>8.1%} {r['images_per_s']:>8.1f} "
            f"{r['flop_per_s'] / 1e9:>8.1f} {mfu:>6} {comp:>9} {breaks:>6}"
        )


def _run_throughput(args: argparse.Namespace) -> int:
    from gqnbench.harness.throughput import matmul_peak, throughput_matrix

    compiled = {"eager": (False,), "compiled": (True,), "both": (False, True)}[args.compile]
    peaks = None if args.no_peak else matmul_peak(args.device, args.dtypes, n=args.matmul_n)
    if peaks:
        print(
            "matmul peak: "
            + ", ".join(
                f"{d} {peaks[f'{d}_flop_per_s'] / 1e9:.0f} GFLOP/s" for d in args.dtypes if f"{d}_flop_per_s" in peaks
            )
            + f" ({peaks['n']}^2)"
        )
    rows = throughput_matrix(
        args.models,
        args.preset,
        modes=args.modes,
        batches=args.batch or (None,),
        dtypes=args.dtypes,
        compiled=compiled,
        channels_last=(False, True) if args.channels_last == "both" else (args.channels_last == "on",),
        device=args.device,
        rounds=args.rounds,
        warmup=args.warmup,
        peaks=peaks,
        measure_memory=args.memory,
        progress=lambda label: print(f"measuring {label} ...", flush=True),
        overrides=_overrides(args),
        num_queries=args.queries,
        compile_backend=args.backend,
        flush_denormal=not args.keep_denormals,
    )
    _print_rows(rows)
    _write(args, {"device": args.device, "matmul_peak": peaks, "throughput": rows})
    return 0


# --- numerics --------------------------------------------------------------------------------------------------


def _run_numerics(args: argparse.Namespace) -> int:
    from gqnbench.harness.numerics import check_numerics

    failed = 0
    rows = []
    for model in args.models:
        r = check_numerics(
            model,
            preset_from_args(args),
            args.dtype,
            compiled=args.compile,
            batch=args.batch,
            device=args.device,
            multiplier=args.multiplier,
            compile_backend=args.backend,
        )
        rows.append(r.as_dict())
        status = "PASS" if r.passed else "FAIL"
        print(
            f"{status} {model} {args.dtype}{' compiled' if args.compile else ''}: relative error vs fp64 "
            f"loss {r.loss_err_fast:.2e} (fp32 eager {r.loss_err_fp32:.2e}, bound {r.loss_bound:.2e}), "
            f"gradients {r.grad_err_fast:.2e} (fp32 eager {r.grad_err_fp32:.2e}, bound {r.grad_bound:.2e}), "
            f"gradient cosine {r.grad_cosine:.6f}"
        )
        if not r.passed:
            failed += 1
            print(f"  {r.reason}")
    _write(args, {"device": args.device, "numerics": rows})
    return 1 if failed else 0


# --- scaling ---------------------------------------------------------------------------------------------------


def _run_scaling(args: argparse.Namespace) -> int:
    from gqnbench.harness.scaling import default_axes, measure_scaling

    axes = default_axes(args.preset)
    if args.axis:
        axes = {args.axis: args.values or axes.get(args.axis, [])}
    rows = measure_scaling(
        args.models,
        args.preset,
        axes,
        dtype=args.dtype,
        device=args.device,
        batch=args.batch,
        rounds=args.rounds,
        progress=lambda text: print(f"measuring {text} ...", flush=True),
    )
    print(f"{'model':<8} {'axis':<10} {'value':>6} {'step s':>9} {'peak MiB':>9} {'img/s':>8}")
    for r in rows:
        print(
            f"{r['model']:<8} {r['axis']:<10} {r['value']:>6} {r['step_s']:>9.4f} {_mib(r['peak_memory_bytes']):>9} "
            f"{r['images_per_s']:>8.1f}"
        )
    _write(args, {"device": args.device, "scaling": rows})
    return 0


# --- profile ---------------------------------------------------------------------------------------------------


def _run_profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gqnbench.harness.common import StepSpec
    from gqnbench.harness.profile import format_phase_table, profile_phases, profile_step, write_profile

    spec = StepSpec(
        args.model,
        args.preset,
        args.mode,
        args.batch,
        args.dtype,
        compiled=args.compile,
        device=args.device,
        overrides=_overrides(args),
    )
    if args.compile or args.no_phases:
        # Phase labels hook module calls, which a compiled step does not make: a plain trace instead.
        result = profile_step(spec, args.out, warmup=args.warmup, active=args.steps, top_k=args.top_k)
        print(result.table)
        print(
            f"trace: {result.trace_path}  (tensorboard --logdir {result.out_dir}; or open in https://ui.perfetto.dev)"
        )
        if result.memory_snapshot:
            print(f"CUDA memory snapshot: {result.memory_snapshot}  (open in https://pytorch.org/memory_viz)")
        return 0
    from gqnbench.harness.throughput import matmul_peak

    peaks = None if args.no_peak else matmul_peak(args.device, (args.dtype,), n=args.matmul_n)
    case = profile_phases(
        spec,
        args.out,
        warmup=args.warmup,
        active=args.steps,
        plain_rounds=args.plain_rounds,
        top_k=args.top_k,
        peaks=peaks,
    )
    print(format_phase_table(case))
    print(f"  top operators by self time ({'CUDA' if case['phase_time'] == 'cuda kernel' else 'CPU'}):")
    for op in case["top_operators"][: min(args.top_k, 10)]:
        print(f"    {op['name'][:48]:<48} {op['self_s'] * 1e3:>9.2f} ms/step {op['share']:>7.1%}")
    results = Path(args.results) if args.results else Path(args.out) / "profile.json"
    print(f"trace: {case['trace_file']}  (tensorboard --logdir {args.out}; or open in https://ui.perfetto.dev)")
    print(f"wrote {write_profile(results, [case], args.preset, args.device, peaks)}")
    return 0


# --- perf-targets ----------------------------------------------------------------------------------------------


def _run_targets(args: argparse.Namespace) -> int:
    import torch

    from gqnbench.harness.targets import format_targets, measure_targets

    if args.threads:
        torch.set_num_threads(args.threads)

    # (compiled, channels_last). channels_last no longer helps since the cores were folded
    # (1.14 vs 1.04 s at paper size); it stays one flag away for other machines.
    variants = [(False, False)]
    if args.channels_last:
        variants.append((False, True))
    if not args.no_compile:
        variants.append((True, False))
    result = measure_targets(
        args.model,
        args.preset,
        args.batch,
        rounds=args.rounds,
        warmup=args.warmup,
        bf16_variants=variants,
        device=args.device,
        progress=lambda text: print(f"measuring {text} ...", flush=True),
    )
    print(format_targets(result))
    if args.out:
        from gqnbench.results import capture_environment, write_result

        print(
            f"wrote {write_result(args.out, 'costs', {'preset': args.preset, 'perf_targets': result}, capture_environment(args.device))}"
        )
    return 0


# --- registration ----------------------------------------------------------------------------------------------


def _models_arg(parser: argparse.ArgumentParser, default=MODEL_NAMES) -> None:
    parser.add_argument("--models", "--model", nargs="+", default=list(default), help="models (default: both)")


def _device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")


def _out_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="also write a 'costs' results file (JSON) here")


def _selection_args(parser: argparse.ArgumentParser, preset: str = "cpu", *, device: bool = True) -> None:
    """``--preset``/``--set``, ``--models`` and, for commands that run a step, ``--device``."""
    add_preset_arguments(parser, default=preset)
    _models_arg(parser)
    if device:
        _device_arg(parser)


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=model_choices(), default="gqn")


def _batch_arg(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--batch", type=int, default=None, help=help)


def _dtype_arg(parser: argparse.ArgumentParser, default: str = "fp32") -> None:
    parser.add_argument("--dtype", choices=DTYPES, default=default)


def _backend_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")


def _timing_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("costs", help="run every cost harness and write one costs results file")
    p.add_argument("--preset", default="cpu", help="size preset (default cpu)")
    _models_arg(p)
    _device_arg(p)
    p.add_argument("--out", default="results/costs.json", help="results file (default results/costs.json)")
    p.add_argument("--quick", action="store_true", help="the subset for a quick main job (about a minute at cpu)")
    p.add_argument("--no-resume", action="store_true", help="re-measure sections already in --out")
    p.add_argument("--sections", nargs="+", default=None, help="only these sections (default all)")
    p.set_defaults(func=_run_costs)

    p = subparsers.add_parser("params", help="parameter counts per module: all, and those the objective trains")
    _selection_args(p, "paper", device=False)
    p.add_argument(
        "--objective-layout",
        action="store_true",
        help="build metagqn without the authors' unused prior head (default: with it, as the study counted)",
    )
    _out_arg(p)
    p.set_defaults(func=_run_params)

    p = subparsers.add_parser("flops", help="FLOPs per scene: forward, forward+backward, per module; fvcore MACs")
    _selection_args(p, "paper", device=False)
    p.add_argument("--context", type=int, default=3, help="context views per scene (default 3, as in SPEC)")
    p.add_argument("--queries", type=int, default=1, help="query views per scene (default 1)")
    p.add_argument("--no-fvcore", action="store_true", help="skip fvcore's traced count (needs one CPU forward)")
    _out_arg(p)
    p.set_defaults(func=_run_flops)

    p = subparsers.add_parser("memory", help="peak memory of a training step and of inference")
    _selection_args(p)
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    _batch_arg(p, "scenes per step (default: the preset's)")
    _dtype_arg(p)
    _out_arg(p)
    p.set_defaults(func=_run_memory)

    p = subparsers.add_parser("throughput", help="step time, images/s, FLOP/s and MFU per model/dtype/compile")
    _selection_args(p)
    p.add_argument("--modes", nargs="+", choices=("train", "infer"), default=["train", "infer"])
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: the preset's)")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=["fp32", "bf16"])
    p.add_argument("--compile", choices=("eager", "compiled", "both"), default="eager")
    _backend_arg(p)
    p.add_argument("--channels-last", choices=("off", "on", "both"), default="off")
    p.add_argument("--queries", type=int, default=1, help="query views per scene K (default 1)")
    p.add_argument("--keep-denormals", action="store_true", help="do not flush denormals to zero on CPU (see StepSpec)")
    _timing_args(p)
    p.add_argument("--matmul-n", type=int, default=4096, help="size of the peak-measuring matmul (default 4096)")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak (no MFU)")
    p.add_argument("--memory", action="store_true", help="add peak memory (CPU: one fresh process per case)")
    _out_arg(p)
    p.set_defaults(func=_run_throughput)

    p = subparsers.add_parser("numerics", help="fast path (bf16/fp16 autocast, compile) vs an fp64 reference")
    _selection_args(p, "tiny")
    _dtype_arg(p, "bf16")
    p.add_argument("--compile", action="store_true", help="compile the fast path")
    _backend_arg(p)
    _batch_arg(p)
    p.add_argument("--multiplier", type=float, default=3.0, help="allowed multiple of the fp32 eager error")
    _out_arg(p)
    p.set_defaults(func=_run_numerics)

    p = subparsers.add_parser("scaling", help="step time and peak memory as L, image size, batch, M grow")
    p.add_argument("--preset", default="cpu", help="size preset (default cpu)")
    _models_arg(p)
    _device_arg(p)
    p.add_argument("--axis", choices=("L", "image_size", "batch", "M"), default=None, help="one axis (default all)")
    p.add_argument("--values", type=int, nargs="+", default=None, help="values for --axis")
    _dtype_arg(p)
    _batch_arg(p)
    p.add_argument("--rounds", type=int, default=3)
    _out_arg(p)
    p.set_defaults(func=_run_scaling)

    p = subparsers.add_parser(
        "profile", help="phase times, FLOP/s and share of peak per phase; trace for TensorBoard/Perfetto"
    )
    add_preset_arguments(p)
    _model_arg(p)
    _device_arg(p)
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    _batch_arg(p)
    _dtype_arg(p)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--warmup", type=int, default=2, help="unprofiled steps first (default 2)")
    p.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--out", default="results/profile", help="trace folder (default results/profile)")
    p.add_argument("--results", default=None, help="'profile' results file (default OUT/profile.json)")
    p.add_argument("--plain-rounds", type=int, default=3, help="unprofiled steps timed before and after (default 3)")
    p.add_argument("--matmul-n", type=int, default=None, help="size of the peak-measuring matmul (default 4096)")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak (no share of peak)")
    p.add_argument("--no-phases", action="store_true", help="a plain trace and op table, without phase labels")
    p.set_defaults(func=_run_profile)

    p = subparsers.add_parser("perf-targets", help="issue 5's performance targets (paper GQN, batch 8; minutes)")
    _model_arg(p)
    p.add_argument("--preset", default="paper")
    p.add_argument("--batch", type=int, default=8)
    _device_arg(p)
    p.add_argument("--rounds", type=int, default=7, help="interleaved measured rounds (default 7)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured steps per case first (default 3)")
    p.add_argument("--no-compile", action="store_true", help="skip bf16 + torch.compile (saves ~45 s of compile)")
    p.add_argument("--channels-last", action="store_true", help="also try bf16 eager in channels_last")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    p.set_defaults(func=_run_targets)
