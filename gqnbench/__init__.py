"""gqnbench: cost and learning benchmarks for Generative Query Networks.

Subpackages, in the direction data flows (each may import only those before it):

- ``gqnbench.data``      Shepard-Metzler scenes: TFRecord I/O, the embedded generator,
                         the decoded cache and episode sampling.
- ``gqnbench.models``    the model registry: the reference GQN and the meta-learning GQN.
- ``gqnbench.harness``   cost measurements: parameters, FLOPs, memory, throughput, profiles.
- ``gqnbench.training``  the training loop, time to target and robustness sweeps.
- ``gqnbench.report``    turns results files into Markdown/HTML reports; it reads plain
                         JSON/CSV only and never imports a model.

Shared leaf modules: ``config`` (override parsing), ``metrics`` (the study's NLL),
``results`` (result-file schema, atomic writes, environment capture), ``presets`` and
``step`` (the one training step: ``build_step`` gives the optimizer, precision/autocast,
grad scaler, compile and CPU flush-to-zero that both the harness times and training
trains; one precision vocabulary, fp32 | bf16 | fp16).
"""

__version__ = "0.1.0"
