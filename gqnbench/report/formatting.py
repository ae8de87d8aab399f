"""Number formatting for report tables: every number carries its unit, infinity reads "not reached"."""

from __future__ import annotations

import math
from typing import Any

from gqnbench.report.document import status_cell

NOT_REACHED = status_cell("not reached (∞)", "warn")
MISSING = "—"


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def fmt_int(value: Any) -> str:
    """12345678 -> '12,345,678'."""
    if _is_missing(value):
        return MISSING
    return f"{int(round(float(value))):,}"


def _fmt_real(value: Any, spec: str) -> str:
    if _is_missing(value):
        return MISSING
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return format(value, spec)


def fmt_float(value: Any, digits: int = 1) -> str:
    """Fixed decimals with thousands separators; infinity as ∞."""
    return _fmt_real(value, f",.{digits}f")


def fmt_sig(value: Any, digits: int = 3) -> str:
    """Significant digits (for MSEs and relative errors): 0.02394 -> '0.0239'."""
    return _fmt_real(value, f".{digits}g")


def fmt_sci(value: Any, digits: int = 4) -> str:
    """The study's style: 11439 -> '1.1439e4'."""
    if _is_missing(value):
        return MISSING
    mantissa, exponent = f"{float(value):.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_until(value: Any, digits: int = 1) -> str:
    """A time-to-target value: a number, or 'not reached (∞)' for infinity."""
    if _is_missing(value):
        return MISSING
    if math.isinf(float(value)):
        return NOT_REACHED
    return fmt_float(value, digits)


def fmt_pct(value: Any, digits: int = 1, signed: bool = False) -> str:
    """A fraction as percent: 0.305 -> '30.5%' (``signed``: '+30.5%')."""
    if _is_missing(value):
        return MISSING
    value = float(value)
    if math.isinf(value):
        return "+∞%" if value > 0 else "-∞%"
    return f"{value * 100:+.{digits}f}%" if signed else f"{value * 100:.{digits}f}%"


def fmt_bool(value: Any, yes: str = "yes", no: str = "no") -> str:
    if value is None:
        return MISSING
    return yes if bool(value) else no


def mib(value: Any) -> float:
    """Bytes -> MiB (NaN stays NaN)."""
    return math.nan if _is_missing(value) else float(value) / 2**20


def fmt_ms(seconds: Any, digits: int = 1) -> str:
    """Seconds shown in milliseconds."""
    return MISSING if _is_missing(seconds) else fmt_float(float(seconds) * 1e3, digits)


MODEL_LABELS = {"gqn": "GQN", "metagqn": "proposed (metagqn)"}


def model_label(model: str) -> str:
    """Display name of a registry model name (unknown models keep their registry name)."""
    return MODEL_LABELS.get(model, model)
