"""Cost harnesses: parameters, FLOPs, memory, throughput, numerics of the fast paths,
scaling and profiles.

May import ``gqnbench.data``, ``gqnbench.models``, ``gqnbench.metrics`` and
``gqnbench.results``; writes ``costs`` results files; never imports training or report.

One module per job, each usable from Python and from a ``gqnbench`` subcommand:

==================  =====================================================  ======================
module              public function                                        command
==================  =====================================================  ======================
``params``          ``parameter_report(model, preset)``                    ``gqnbench params``
``flops``           ``flop_report(model, preset)``, ``step_flops(...)``    ``gqnbench flops``
``memory``          ``measure_memory(spec)``, ``nvml_snapshot()``          ``gqnbench memory``
``throughput``      ``measure_throughput(spec)``, ``matmul_peak(device)``  ``gqnbench throughput``
``numerics`` (*)    ``check_numerics(model, preset, dtype, compiled)``     ``gqnbench numerics``
``scaling``         ``measure_scaling(models, preset, axes)``              ``gqnbench scaling``
``profile``         ``profile_step(spec, out_dir)``                        ``gqnbench profile``
``suite``           ``measure_costs(preset, models, out_path, quick)``     ``gqnbench costs``
``targets``         ``measure_targets(...)`` (CPU and GPU targets)         ``gqnbench perf-targets``
==================  =====================================================  ======================

(*) The fp64 numerics check sits beside the step (``gqnbench.numerics``) so that training's precision
choice can use it too; the harness re-exports ``check_numerics``.

``common`` holds what they share: :class:`StepSpec` (one cell of the matrix: model,
preset, mode train|infer, batch, dtype fp32|bf16|fp16, compiled, channels_last, fast path, device),
:func:`prepare_step` (a synthetic batch and the step every harness times, built by
:func:`gqnbench.step.build_step`, the builder the training loop uses) and synchronised timing. Units: FLOP = 2 per multiply-add (FlopCounterMode), fvcore counts in
multiply-adds, time in seconds, memory in bytes, throughput in query images per second.

The ``costs`` results file (``measure_costs``) has the top-level keys ``preset, device,
quick, models, params, flops, reference, matmul_peak, throughput, memory, numerics,
scaling, timings_s``; each section's fields are documented in the module that makes it
(see ``gqnbench.harness.suite`` for the overview).
"""

from gqnbench.harness.common import StepSpec, UnsupportedCase, prepare_step, time_calls
from gqnbench.harness.flops import flop_report, step_flops
from gqnbench.harness.memory import measure_memory, nvml_snapshot
from gqnbench.harness.params import parameter_report
from gqnbench.harness.scaling import measure_scaling
from gqnbench.harness.suite import measure_costs
from gqnbench.harness.throughput import matmul_peak, measure_throughput
from gqnbench.numerics import check_numerics

__all__ = [
    "StepSpec",
    "UnsupportedCase",
    "check_numerics",
    "flop_report",
    "matmul_peak",
    "measure_costs",
    "measure_memory",
    "measure_scaling",
    "measure_throughput",
    "nvml_snapshot",
    "parameter_report",
    "prepare_step",
    "step_flops",
    "time_calls",
]
