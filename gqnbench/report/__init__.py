"""Reports: Markdown + self-contained HTML + PNG/CSV from results files.

Reads only plain results files (JSON, see :mod:`gqnbench.results`) and pytest-benchmark
JSON; never imports gqnbench.models, .harness, .training or torch.

Entry points: ``python -m gqnbench.report RESULTS... [--baseline RESULTS...] [--out DIR]``,
:func:`gqnbench.report.build.build_report` (with :func:`gqnbench.report.inputs.load_results`),
and :func:`gqnbench.report.compare.compare_metrics` for comparisons outside a report.
Submodules are imported on demand so ``import gqnbench.report`` stays light.
"""
