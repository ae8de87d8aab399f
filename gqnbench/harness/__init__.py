"""Cost harnesses: parameters, FLOPs, memory, throughput, numerics of the fast paths,
scaling and profiles.

May import ``gqnbench.data``, ``gqnbench.models``, ``gqnbench.metrics`` and
``gqnbench.results``; writes ``costs`` results files; never imports training or report.
"""
