"""``python -m gqnbench`` is the same as the ``gqnbench`` console script."""

from gqnbench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
