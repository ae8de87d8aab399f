"""Nightly regression checks for gqnbench (used by ``ci/nightly.py``; not part of the package).

Modules, one job each:

- :mod:`nightlyci.device`      which machine this is: ``cuda`` GPU name or ``cpu-<model>`` slug.
- :mod:`nightlyci.thresholds`  the per-metric limits in ``ci/thresholds.json``.
- :mod:`nightlyci.collect`     a run folder (pytest-benchmark JSON + training_run files) -> metrics.
- :mod:`nightlyci.baseline`    pinned baseline files ``ci/baselines/<device>.json``: write and read.
- :mod:`nightlyci.compare`     current metrics vs baseline metrics -> a verdict (rows + exit code).
- :mod:`nightlyci.render`      the verdict as a readable table and a JSON file.
- :mod:`nightlyci.runner`      the ``run`` steps: benchmarks, short training, report, check.
"""

from pathlib import Path

CI_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = CI_DIR.parent
BASELINE_DIR = CI_DIR / "baselines"
DEFAULT_THRESHOLDS = CI_DIR / "thresholds.json"

# Exit codes of every nightly command (documented in ci/README.md).
EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_NO_BASELINE = 3
