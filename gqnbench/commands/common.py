"""Argument helpers shared by the subcommands: preset selection and ``--set`` overrides."""

from __future__ import annotations

import argparse

from gqnbench.config import parse_override_strings
from gqnbench.presets import Preset, get_preset, list_presets


def add_preset_arguments(parser: argparse.ArgumentParser, default: str = "cpu") -> None:
    parser.add_argument(
        "--preset", default=default, help=f"size preset: {', '.join(list_presets())} (default {default})"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any preset field, e.g. --set model.z_channels=32 --set train.batch_size=8 (repeatable)",
    )


def preset_from_args(args: argparse.Namespace) -> Preset:
    return get_preset(args.preset, parse_override_strings(args.overrides))


def model_choices() -> list[str]:
    """Every registered model: the study's two and each plugin loaded (gqnbench.plugins)."""
    from gqnbench.models import list_models
    from gqnbench.plugins import ensure_plugins

    ensure_plugins()
    return list_models()
