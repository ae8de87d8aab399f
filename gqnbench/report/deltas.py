"""Lower-is-better metrics against a baseline: key pairing, presence and percent change.

The arithmetic under :mod:`gqnbench.report.compare` (the one comparison engine); the nightly
gate's rules (:mod:`gqnbench.nightly.gate`) use its ``MISSING``/``NEW`` names for one-sided rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TypeVar

T = TypeVar("T")

MISSING = "missing"  # in the baseline only
NEW = "new"  # in the current set only


def paired(current: Mapping[str, T], baseline: Mapping[str, T]) -> Iterator[tuple[str, T | None, T | None]]:
    """``(key, current value, baseline value)`` for every key of either side, sorted by key."""
    for key in sorted(set(current) | set(baseline)):
        yield key, current.get(key), baseline.get(key)


def presence(current: object | None, baseline: object | None) -> str | None:
    """:data:`MISSING` or :data:`NEW` when only one side has the key, ``None`` when both do."""
    if current is None:
        return MISSING
    if baseline is None:
        return NEW
    return None


def pct_change(current: float, baseline: float) -> float:
    """Percent change from ``baseline`` to ``current``: 0.0 when both are zero, infinity from zero."""
    if baseline == 0:
        return 0.0 if current == 0 else math.inf
    return (current - baseline) / abs(baseline) * 100.0
