"""Shared test fixtures. Tests use the ``tiny`` preset: milliseconds per step on 2 cores."""

from __future__ import annotations

import pytest
import torch

from gqnbench.presets import get_preset


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny():
    return get_preset("tiny")
