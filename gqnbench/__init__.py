"""gqnbench: cost and learning benchmarks for Generative Query Networks.

Subpackages, in the direction data flows (each may import only those before it):

- ``gqnbench.data``      Shepard-Metzler scenes: TFRecord I/O, the embedded generator,
                         the decoded cache and episode sampling.
- ``gqnbench.models``    the model registry: the reference GQN and the meta-learning GQN.
- ``gqnbench.harness``   cost measurements: parameters, FLOPs, memory, throughput, profiles.
- ``gqnbench.training``  the training loop, time to target and robustness sweeps.
- ``gqnbench.report``    turns results files into Markdown/HTML reports; it reads plain
                         JSON/CSV only and never imports a model. Its ``metrics`` and
                         ``compare`` modules are the one comparison engine.
- ``gqnbench.nightly``   the nightly regression gate (``ci/nightly.py`` is its entry
                         script): runs benchmarks and a short training as subprocesses and
                         layers its rules (thresholds, unstable, NLL band) on the report's
                         comparison rows.

Shared leaf modules, torch-free: ``config`` (the model, data and training configs and their
overrides), ``judging`` (the study's numbers, the NLL constant and the "learned" rule, which
training and the report both apply), ``files`` (atomic writes and locks), ``environment``
(versions, commit and machine load), ``results`` (reading and writing results files), ``schema`` (one pydantic model per
results kind, checked on write and on read). Above the models: ``metrics`` (the study's NLL on
tensors), ``presets`` and ``step`` (the one training step: ``build_step`` gives the optimizer, precision/autocast,
grad scaler, compile, the fast path and CPU flush-to-zero that both the harness times and
training trains; one precision vocabulary, fp32 | bf16 | fp16), ``numerics`` (a step's loss and
gradients against fp64) and ``precision`` (``train.amp = auto``: fp32 or bf16 by measurement).
"""

__version__ = "0.1.0"
