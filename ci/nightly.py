#!/usr/bin/env python3
"""Nightly regression check for gqnbench: the entry point of :mod:`gqnbench.nightly.cli`.

    python ci/nightly.py run --device cuda|cpu --out DIR [--quick]   # bench, train, report, check
    python ci/nightly.py check --current DIR [--baseline FILE|DIR]   # compare two existing runs
    python ci/nightly.py baseline --from DIR [--device-name NAME]    # pin DIR as ci/baselines/<NAME>.json

Exit codes: 0 pass, 1 regression or failed step, 2 bad input, 3 no baseline. See ci/README.md.
"""

from gqnbench.nightly.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
