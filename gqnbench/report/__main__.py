"""``python -m gqnbench.report``: see :mod:`gqnbench.report.cli`."""

from gqnbench.report.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
