"""Entry point of the fresh process that measures one step's peak RSS: ``python -m gqnbench.harness.memory_worker``.

Kept apart from :mod:`gqnbench.harness.memory` so running it does not re-import a module
the package ``__init__`` already loaded (runpy warns about that).
"""

from gqnbench.harness.memory import _worker_main

if __name__ == "__main__":
    raise SystemExit(_worker_main())
