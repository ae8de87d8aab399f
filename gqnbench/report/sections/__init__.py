"""One module per report section; each exposes ``build(results, ctx) -> Section``.

A builder returns a section holding only a one-line note when its results are absent, so a
report of partial results still renders.
"""
