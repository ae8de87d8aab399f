"""Argument helpers shared by the subcommands: preset selection and ``--set`` overrides; how a
command reports runs that did not complete."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from gqnbench.config import parse_override_strings
from gqnbench.presets import Preset, get_preset, list_presets

if TYPE_CHECKING:
    from gqnbench.training.run_files import RunsFailed

SET_HELP = "override any preset field, e.g. --set model.z_channels=32 --set train.batch_size=8 (repeatable)"


def add_set_argument(parser: argparse.ArgumentParser, help: str = SET_HELP) -> None:
    """``--set SECTION.FIELD=VALUE`` (repeatable) into ``args.overrides``; read it with :func:`overrides_from_args`."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE", help=help
    )


def add_preset_arguments(parser: argparse.ArgumentParser, default: str = "cpu") -> None:
    """``--preset NAME`` and ``--set``: every command that takes a preset takes both."""
    parser.add_argument(
        "--preset", default=default, help=f"size preset: {', '.join(list_presets())} (default {default})"
    )
    add_set_argument(parser)


def overrides_from_args(args: argparse.Namespace) -> dict[str, str]:
    """``--set`` as ``{"section.field": "value"}``, the form ``get_preset`` and the results files take."""
    return parse_override_strings(args.overrides)


def preset_from_args(args: argparse.Namespace) -> Preset:
    return get_preset(args.preset, overrides_from_args(args))


def model_choices() -> list[str]:
    """Every registered model: the study's two and each plugin loaded (gqnbench.plugins)."""
    from gqnbench.models import list_models
    from gqnbench.plugins import ensure_plugins

    ensure_plugins()
    return list_models()


def not_completed(command: str, exc: RunsFailed) -> int:
    """Say which runs failed (with their error) or diverged, and how to retry; the exit status (1)."""
    where = f" (listed in {exc.path})" if exc.path is not None else ""
    retry = "; running the same command again retries the failed ones" if exc.failed else ""
    lines = "".join(f"\n  {line}" for line in exc.lines)
    print(f"gqnbench {command}: {exc.summary()}{where}{retry}:{lines}", file=sys.stderr)
    return 1
