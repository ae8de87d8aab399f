"""Training: the one training loop for every model, validation NLL, checkpoints and resume,
time to target and robustness sweeps, distributed data parallel.

May import ``gqnbench.data``, ``gqnbench.models``, ``gqnbench.metrics``, ``gqnbench.results``
(and the harness's environment helpers); writes ``training_run``, ``time_to_target``,
``sweep`` and ``samples`` results files; never imports the report.
"""
