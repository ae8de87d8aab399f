"""Shared test fixtures. Tests use the ``tiny`` preset: milliseconds per step on 2 cores."""

from __future__ import annotations

import pytest
import torch

from gqnbench.presets import get_preset


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP
    # barriers stall when another process holds a core: one thread keeps the suite's cost
    # predictable. Subprocess tests (DDP, sweeps, the main job) set their own threads.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny():
    return get_preset("tiny")
