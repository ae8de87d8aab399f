"""The nightly regression gate: run the benchmarks and a short training run, compare with a pinned baseline.

``ci/nightly.py`` is its command line (:mod:`gqnbench.nightly.cli`). The comparison itself is
the report's (:mod:`gqnbench.report.metrics` collects, :mod:`gqnbench.report.compare` pairs
and judges); this package adds what only a gate needs:

- :mod:`~gqnbench.nightly.device`      which machine this is: GPU model or ``cpu-<model>`` slug, and
  its host record (CPU signature, cores, ISA features, GPU memory, driver, clocks).
- :mod:`~gqnbench.nightly.thresholds`  the per-metric limits in ``ci/thresholds.json``.
- :mod:`~gqnbench.nightly.schema`      the typed ``nightly_run``, ``nightly_baseline`` and
  ``nightly_verdict`` results files.
- :mod:`~gqnbench.nightly.collect`     a run folder or a pinned baseline -> metrics + run identity.
- :mod:`~gqnbench.nightly.gate`        the gate's rules (timings as ratios to a reference, busy
  host, unstable, NLL band, failed steps, missing rows) on the shared comparison rows -> a verdict.
- :mod:`~gqnbench.nightly.render`      the verdict as a table and a results file.
- :mod:`~gqnbench.nightly.runner`      the ``run`` steps, each a subprocess.

Only the runner starts benchmarks and training, and only as subprocesses, so importing this
package never imports torch or a model.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CI_DIR = REPO_ROOT / "ci"
BASELINE_DIR = CI_DIR / "baselines"
DEFAULT_THRESHOLDS = CI_DIR / "thresholds.json"

# Exit codes of every nightly command (documented in ci/README.md).
EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_NO_BASELINE = 3
