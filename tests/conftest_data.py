"""Fixtures for the data tests, loaded by ``pytest_plugins = ["conftest_data"]`` in tests/test_data_*.py
(the lead owns conftest.py).

``tiny_dataset``: one small generated data set per session (24 scenes, 18 train in 4 shards
and 6 test in 2 shards), rendered once in-process (about half a second). Tests that modify
files copy it first (``dataset_copy``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gqnbench.data.generate import generate_dataset

TINY_SCENES = 24
TINY_SEED = 3
TINY_VAL_FRACTION = 0.25
TINY_PER_FILE = 5


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sm7") / "root"
    return generate_dataset(
        root,
        TINY_SCENES,
        seed=TINY_SEED,
        val_fraction=TINY_VAL_FRACTION,
        scenes_per_file=TINY_PER_FILE,
        workers=1,
        progress=False,
    )


@pytest.fixture(scope="session")
def tiny_meta() -> dict[str, float]:
    """The settings ``tiny_dataset`` was generated with."""
    return {"scenes": TINY_SCENES, "seed": TINY_SEED, "val_fraction": TINY_VAL_FRACTION, "per_file": TINY_PER_FILE}


@pytest.fixture
def dataset_copy(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of ``tiny_dataset`` (without its decoded cache) that a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(tiny_dataset, dst, ignore=shutil.ignore_patterns(".gqnbench-cache"))
    return dst
