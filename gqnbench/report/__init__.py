"""Reports: Markdown + self-contained HTML + PNG/CSV from results files.

Reads only plain results files (JSON/CSV, see :mod:`gqnbench.results`) and pytest-benchmark
JSON; never imports gqnbench.models, .harness, .training or torch.
"""
