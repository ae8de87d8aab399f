"""The cost harness commands: ``costs`` (everything, one results file) and one command per harness.

Examples::

    gqnbench costs --preset cpu --out results/costs.json [--quick] [--set model.hidden_channels=32]
    gqnbench params --preset paper                 # both counting ways, per module
    gqnbench flops --preset paper                  # FlopCounterMode fwd / fwd+bwd, fvcore MACs
    gqnbench memory --model gqn --preset cpu --dtype bf16
    gqnbench throughput --models gqn metagqn --preset cpu --dtypes fp32 bf16 --compile both
    gqnbench numerics --model gqn --preset tiny --dtype bf16 [--compile]
    gqnbench scaling --models gqn --preset cpu --axis L --values 2 4 8
    gqnbench profile --model gqn --preset cpu --out results/profile   # phase table + trace + profile.json
    gqnbench perf-targets                           # issue 5's targets, paper GQN at batch 8 (minutes)

Every command takes ``--preset`` and ``--set SECTION.FIELD=VALUE`` (repeatable); the overrides
change the preset every measurement uses and are recorded in the results file written.
"""

from __future__ import annotations

import argparse
import json

from gqnbench.commands.common import add_preset_arguments, model_choices, overrides_from_args, preset_from_args
from gqnbench.commands.tables import print_table
from gqnbench.presets import MODEL_NAMES

DTYPES = ("fp32", "bf16", "fp16")
PRESET_BATCH = "scenes per step (default: the preset's)"


def _overrides(args: argparse.Namespace) -> tuple[tuple[str, object], ...]:
    """``--set`` as the pairs ``StepSpec.overrides`` takes."""
    return tuple(overrides_from_args(args).items())


def _write(args: argparse.Namespace, payload: dict) -> None:
    """Write ``payload`` as a ``costs`` results file (with the preset and its overrides) when ``--out`` was given."""
    if getattr(args, "out", None):
        from gqnbench.environment import capture_environment
        from gqnbench.results import write_result

        doc = {"preset": args.preset, "overrides": overrides_from_args(args), **payload}
        path = write_result(args.out, "costs", doc, capture_environment(getattr(args, "device", None)))
        print(f"wrote {path}")


def _gb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e9:.3f}"


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def _progress(text: str) -> None:
    print(f"measuring {text} ...", flush=True)


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
        overrides=overrides_from_args(args),
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
        rows = [
            {"module": k, "total": f"{v['total']:,}", "used": f"{v['used']:,}"} for k, v in rep["per_module"].items()
        ]
        print_table(rows, right={"total", "used"})
    _write(args, {"params": reports})
    return 0


# --- flops -----------------------------------------------------------------------------------------------------


def _print_flops(model: str, args: argparse.Namespace, rep: dict) -> None:
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
    rows = [
        {"module": k, "fwd GFLOP": _gb(v["forward"]), "fwd+bwd GFLOP": _gb(v["train"])}
        for k, v in rep["per_module"].items()
    ]
    print_table(rows, right={"fwd GFLOP", "fwd+bwd GFLOP"})


def _run_flops(args: argparse.Namespace) -> int:
    from gqnbench.harness.flops import flop_report

    preset = preset_from_args(args)
    reports = {
        m: flop_report(m, preset, num_context=args.context, num_queries=args.queries, fvcore=not args.no_fvcore)
        for m in args.models
    }
    for model, rep in reports.items():
        _print_flops(model, args, rep)
    _write(args, {"flops": reports})
    return 0


# --- memory ----------------------------------------------------------------------------------------------------


def _memory_line(model: str, mode: str, dtype: str, row: dict) -> str:
    if "peak_rss_bytes" in row:
        return (
            f"{model} {mode} b{row['batch']} {dtype}: peak RSS {_mib(row['peak_rss_bytes'])} MiB "
            f"(step adds {_mib(row['step_rss_increase_bytes'])} MiB over {_mib(row['baseline_rss_bytes'])} "
            f"MiB resident; runtime alone {_mib(row['runtime_rss_bytes'])} MiB), fresh process"
        )
    return (
        f"{model} {mode} b{row['batch']} {dtype}: CUDA peak allocated "
        f"{_mib(row['peak_allocated_bytes'])} MiB, reserved {_mib(row['peak_reserved_bytes'])} MiB"
    )


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
            row = out[model][mode] = measure_memory(spec)
            print(_memory_line(model, mode, args.dtype, row))
            print(f"  NVML: {json.dumps(row['nvml'])}")
    _write(args, {"device": args.device, "memory": out})
    return 0


# --- throughput ------------------------------------------------------------------------------------------------


_THROUGHPUT_NUMBERS = {"median s", "IQR/med", "img/s", "GFLOP/s", "MFU", "mem MiB", "compile s", "breaks"}


def _throughput_row(r: dict) -> dict:
    name = f"{r['mode']}-{r['model']}-b{r['batch']}-{r['dtype']}-{'compiled' if r['compiled'] else 'eager'}"
    fast = (r.get("fast_path") or {}).get("spec", "off")
    return {
        "case": name + ("" if fast == "off" else f" ({fast})"),
        "median s": f"{r['median_s']:.4f}",
        "IQR/med": f"{r['rel_iqr']:.1%}",
        "img/s": f"{r['images_per_s']:.1f}",
        "GFLOP/s": f"{r['flop_per_s'] / 1e9:.1f}",
        "MFU": None if r["mfu"] is None else f"{r['mfu']:.1%} {r.get('mfu_peak') or ''}".strip(),
        "mem MiB": _mib(r.get("peak_memory_bytes")),
        "compile s": None if r["compile_s"] is None else f"{r['compile_s']:.1f}",
        "breaks": r["graph_breaks"],
    }


def _print_peaks(peaks: dict, dtypes: list[str]) -> None:
    rates = [f"{d} {peaks[f'{d}_flop_per_s'] / 1e9:.0f} GFLOP/s" for d in dtypes if f"{d}_flop_per_s" in peaks]
    print(f"matmul peak: {', '.join(rates)} ({peaks['n']}^2)")


def _run_throughput(args: argparse.Namespace) -> int:
    from gqnbench.harness.throughput import matmul_peak, matrix_specs, measure_interleaved, measure_throughput

    specs = matrix_specs(
        args.models,
        args.preset,
        modes=args.modes,
        batches=args.batch or (None,),
        dtypes=args.dtypes,
        compiled={"eager": (False,), "compiled": (True,), "both": (False, True)}[args.compile],
        channels_last=(False, True) if args.channels_last == "both" else (args.channels_last == "on",),
        fast_paths=args.fast_path,
        device=args.device,
        overrides=_overrides(args),
        num_queries=args.queries,
        compile_backend=args.backend,
        flush_denormal=not args.keep_denormals,
    )
    if args.interleave:
        # Round-robin, the matmul peaks in the rotation: load on a shared machine hits every case alike.
        matmul_n = None if args.no_peak else args.matmul_n
        rows, peaks = measure_interleaved(specs, args.rounds, args.warmup, matmul_n=matmul_n, progress=_progress)
    else:
        peaks = None if args.no_peak else matmul_peak(args.device, args.dtypes, n=args.matmul_n)
        rows = []
        for spec in specs:
            _progress(spec.label())
            rows.append(measure_throughput(spec, args.rounds, args.warmup, peaks, args.memory))
    if peaks:
        _print_peaks(peaks, [*args.dtypes, "tf32"])
    print_table([_throughput_row(r) for r in rows], right=_THROUGHPUT_NUMBERS)
    _write(args, {"device": args.device, "matmul_peak": peaks, "throughput": rows})
    return 0


# --- numerics --------------------------------------------------------------------------------------------------


def _run_numerics(args: argparse.Namespace) -> int:
    from gqnbench.numerics import check_numerics

    preset = preset_from_args(args)
    results = []
    for model in args.models:
        r = check_numerics(
            model, preset, args.dtype, compiled=args.compile, batch=args.batch, device=args.device,
            multiplier=args.multiplier, compile_backend=args.backend,
        )  # fmt: skip
        results.append(r)
        print(
            f"{'PASS' if r.passed else 'FAIL'} {model} {args.dtype}{' compiled' if args.compile else ''}: relative "
            f"error vs fp64 loss {r.loss_err_fast:.2e} (fp32 eager {r.loss_err_fp32:.2e}, bound {r.loss_bound:.2e}), "
            f"gradients {r.grad_err_fast:.2e} (fp32 eager {r.grad_err_fp32:.2e}, bound {r.grad_bound:.2e}), "
            f"gradient cosine {r.grad_cosine:.6f}"
        )
        if not r.passed:
            print(f"  {r.reason}")
    _write(args, {"device": args.device, "numerics": [r.as_dict() for r in results]})
    return 0 if all(r.passed for r in results) else 1


# --- scaling ---------------------------------------------------------------------------------------------------


def _run_scaling(args: argparse.Namespace) -> int:
    from gqnbench.harness.scaling import default_axes, measure_scaling

    axes = default_axes(preset_from_args(args))  # around the overridden sizes, not the registered ones
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
        progress=_progress,
        overrides=_overrides(args),
    )
    table = [
        {"model": r["model"], "axis": r["axis"], "value": r["value"], "step s": f"{r['step_s']:.4f}",
         "peak MiB": _mib(r["peak_memory_bytes"]), "img/s": f"{r['images_per_s']:.1f}"}
        for r in rows
    ]  # fmt: skip
    print_table(table, right={"value", "step s", "peak MiB", "img/s"})
    _write(args, {"device": args.device, "scaling": rows})
    return 0


# --- profile ---------------------------------------------------------------------------------------------------


def _profile_plain(spec, args: argparse.Namespace) -> int:  # noqa: ANN001 - a StepSpec, imported lazily
    """A compiled step (or --no-phases): phase labels hook module calls, which a compiled step does not make."""
    from gqnbench.harness.profile import profile_step

    result = profile_step(spec, args.out, warmup=args.warmup, active=args.steps, top_k=args.top_k)
    print(result.table)
    print(f"trace: {result.trace_path}  (tensorboard --logdir {result.out_dir}; or open in https://ui.perfetto.dev)")
    if result.memory_snapshot:
        print(f"CUDA memory snapshot: {result.memory_snapshot}  (open in https://pytorch.org/memory_viz)")
    return 0


def _run_profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gqnbench.harness.common import StepSpec
    from gqnbench.harness.profile import format_phase_table, profile_phases, write_profile
    from gqnbench.harness.throughput import matmul_peak

    spec = StepSpec(
        args.model, args.preset, args.mode, args.batch, args.dtype,
        compiled=args.compile, device=args.device, overrides=_overrides(args), fast_path=args.fast_path,
    )  # fmt: skip
    fast = spec.fast()
    if args.compile or args.no_phases or fast.fused_cell or fast.cuda_graph:
        return _profile_plain(spec, args)
    peaks = None if args.no_peak else matmul_peak(args.device, (args.dtype,), n=args.matmul_n)
    case = profile_phases(
        spec, args.out, warmup=args.warmup, active=args.steps, plain_rounds=args.plain_rounds, top_k=args.top_k,
        peaks=peaks, memory=False if args.no_memory_timeline else None, gzip=args.gzip,
    )  # fmt: skip
    print(format_phase_table(case))
    ops = [
        {"operator": op["name"][:48], "ms/step": f"{op['self_s'] * 1e3:.2f}", "share": f"{op['share']:.1%}"}
        for op in case["top_operators"][: min(args.top_k, 10)]
    ]
    where = "CUDA" if case["device"].startswith("cuda") else "CPU"
    print_table(ops, title=f"top operators by self time ({where})", right={"ms/step", "share"})
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
    # (compiled, fast path). channels_last no longer helps on the CPU since the cores were folded
    # (1.14 vs 1.04 s at paper size); it stays one flag away for other machines.
    variants = [(False, "off")]
    if args.channels_last:
        variants.append((False, "channels_last"))
    variants += [(False, spec) for spec in args.fast_path]
    if not args.no_compile:
        variants.append((True, "off"))
    result = measure_targets(
        args.model,
        args.preset,
        args.batch,
        rounds=args.rounds,
        warmup=args.warmup,
        bf16_variants=variants,
        device=args.device,
        matmul_n=args.matmul_n,
        progress=_progress,
        overrides=_overrides(args),
    )
    print(format_targets(result))
    _write(args, {"perf_targets": result})
    return 0


# --- arguments -------------------------------------------------------------------------------------------------


def _common(
    parser: argparse.ArgumentParser,
    preset: str = "cpu",
    *,
    one_model: bool = False,
    device: bool = True,
    dtype: str | None = None,
    batch: str | None = None,
    out: bool = True,
) -> None:
    """The options the cost commands share: --preset/--set, --models (or --model), --device, --dtype, --batch, --out.

    ``batch`` is the --batch help text ("" for none; None leaves the option out).
    """
    add_preset_arguments(parser, default=preset)
    if one_model:
        parser.add_argument("--model", choices=model_choices(), default="gqn")
    else:
        parser.add_argument("--models", "--model", nargs="+", default=list(MODEL_NAMES), help="models (default: both)")
    if device:
        parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    if dtype:
        parser.add_argument("--dtype", choices=DTYPES, default=dtype)
    if batch is not None:
        parser.add_argument("--batch", type=int, default=None, help=batch or None)
    if out:
        parser.add_argument("--out", default=None, help="also write a 'costs' results file (JSON) here")


def _timing(parser: argparse.ArgumentParser, rounds: int | None = 5, warmup: int = 2) -> None:
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds, help=f"measured rounds (default {rounds})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"unmeasured steps first (default {warmup})")


def _peak(parser: argparse.ArgumentParser, default_n: int | None = 4096) -> None:
    parser.add_argument(
        "--matmul-n", type=int, default=default_n, help="size of the peak-measuring matmul (default 4096)"
    )
    parser.add_argument("--no-peak", action="store_true", help="skip the matmul peak (no MFU, no share of peak)")


def _backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")


def _costs_args(p: argparse.ArgumentParser) -> None:
    _common(p, out=False)
    p.add_argument("--out", default="results/costs.json", help="results file (default results/costs.json)")
    p.add_argument("--quick", action="store_true", help="the subset for a quick main job (about a minute at cpu)")
    p.add_argument("--no-resume", action="store_true", help="re-measure sections already in --out")
    p.add_argument("--sections", nargs="+", default=None, help="only these sections (default all)")


def _params_args(p: argparse.ArgumentParser) -> None:
    _common(p, "paper", device=False)
    p.add_argument(
        "--objective-layout",
        action="store_true",
        help="build metagqn without the authors' unused prior head (default: with it, as the study counted)",
    )


def _flops_args(p: argparse.ArgumentParser) -> None:
    _common(p, "paper", device=False)
    p.add_argument("--context", type=int, default=3, help="context views per scene (default 3, as in SPEC)")
    p.add_argument("--queries", type=int, default=1, help="query views per scene (default 1)")
    p.add_argument("--no-fvcore", action="store_true", help="skip fvcore's traced count (needs one CPU forward)")


def _memory_args(p: argparse.ArgumentParser) -> None:
    _common(p, dtype="fp32", batch=PRESET_BATCH)
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both")


def _throughput_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--modes", nargs="+", choices=("train", "infer"), default=["train", "infer"])
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: the preset's)")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=["fp32", "bf16"])
    p.add_argument("--compile", choices=("eager", "compiled", "both"), default="eager")
    _backend(p)
    p.add_argument("--channels-last", choices=("off", "on", "both"), default="off")
    p.add_argument(
        "--fast-path", nargs="+", default=["off"], metavar="SPEC",
        help="the step's fast path, one case each (gqnbench.step.FastPath: off, auto, auto,-cuda_graph, "
        "channels_last,fused_cell, ...; default off)",
    )  # fmt: skip
    p.add_argument("--queries", type=int, default=1, help="query views per scene K (default 1)")
    p.add_argument("--keep-denormals", action="store_true", help="do not flush denormals to zero on CPU (see StepSpec)")
    _timing(p)
    _peak(p)
    p.add_argument("--memory", action="store_true", help="add peak memory (CPU: one fresh process per case)")
    p.add_argument(
        "--interleave", action="store_true",
        help="time the cases round-robin with the matmul peaks in the rotation (A/B comparisons on a shared "
        "machine; at most one compiled case)",
    )  # fmt: skip


def _numerics_args(p: argparse.ArgumentParser) -> None:
    _common(p, "tiny", dtype="bf16", batch="")
    p.add_argument("--compile", action="store_true", help="compile the fast path")
    _backend(p)
    p.add_argument("--multiplier", type=float, default=3.0, help="allowed multiple of the fp32 eager error")


def _scaling_args(p: argparse.ArgumentParser) -> None:
    _common(p, dtype="fp32", batch="")
    p.add_argument("--axis", choices=("L", "image_size", "batch", "M"), default=None, help="one axis (default all)")
    p.add_argument("--values", type=int, nargs="+", default=None, help="values for --axis")
    p.add_argument("--rounds", type=int, default=3, help="measured steps per point (default 3)")


def _profile_args(p: argparse.ArgumentParser) -> None:
    _common(p, one_model=True, dtype="fp32", batch="", out=False)
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    _timing(p, rounds=None, warmup=2)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--out", default="results/profile", help="trace folder (default results/profile)")
    p.add_argument("--results", default=None, help="'profile' results file (default OUT/profile.json)")
    p.add_argument("--plain-rounds", type=int, default=3, help="unprofiled steps timed before and after (default 3)")
    _peak(p, default_n=None)
    p.add_argument("--no-phases", action="store_true", help="a plain trace and op table, without phase labels")
    p.add_argument(
        "--no-memory-timeline", action="store_true",
        help="skip the extra step that records the memory timeline (CUDA; slow at paper size); the step's GPU "
        "memory is still recorded",
    )  # fmt: skip
    p.add_argument("--gzip", action="store_true", help="write the trace gzipped (.pt.trace.json.gz)")
    p.add_argument(
        "--fast-path", default="off", metavar="SPEC",
        help="the step's fast path (gqnbench.step.FastPath); phase labels need an eager step: channels_last, "
        "cudnn_benchmark, tf32, fused_adam (default off)",
    )  # fmt: skip


def _targets_args(p: argparse.ArgumentParser) -> None:
    _common(p, "paper", one_model=True)
    p.add_argument("--batch", type=int, default=8)
    _timing(p, rounds=7, warmup=3)
    p.add_argument("--matmul-n", type=int, default=4096, help="size of the peak-measuring matmul (default 4096)")
    p.add_argument("--no-compile", action="store_true", help="skip bf16 + torch.compile (saves ~45 s of compile)")
    p.add_argument("--channels-last", action="store_true", help="also try bf16 eager in channels_last")
    p.add_argument(
        "--fast-path", action="append", default=[], metavar="SPEC",
        help="also time bf16 with this fast path (gqnbench.step.FastPath: auto, auto,-cuda_graph, ...); repeatable",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")


SUBCOMMANDS = (
    ("costs", "run every cost harness and write one costs results file", _costs_args, _run_costs),
    ("params", "parameter counts per module: all, and those the objective trains", _params_args, _run_params),
    ("flops", "FLOPs per scene: forward, forward+backward, per module; fvcore MACs", _flops_args, _run_flops),
    ("memory", "peak memory of a training step and of inference", _memory_args, _run_memory),
    ("throughput", "step time, images/s, FLOP/s and MFU per model/dtype/compile", _throughput_args, _run_throughput),
    ("numerics", "fast path (bf16/fp16 autocast, compile) vs an fp64 reference", _numerics_args, _run_numerics),
    ("scaling", "step time and peak memory as L, image size, batch, M grow", _scaling_args, _run_scaling),
    ("profile", "phase times, FLOP/s and share of peak per phase; trace for TensorBoard/Perfetto", _profile_args,
     _run_profile),
    ("perf-targets", "issue 5's performance targets (paper GQN, batch 8; minutes)", _targets_args, _run_targets),
)  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, help_text, add_arguments, handler in SUBCOMMANDS:
        parser = subparsers.add_parser(name, help=help_text)
        add_arguments(parser)
        parser.set_defaults(func=handler)
