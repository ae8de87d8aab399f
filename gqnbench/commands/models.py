"""``gqnbench models``: list registered models (plugins too) and presets with their parameter counts."""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from gqnbench.commands.common import add_preset_arguments, preset_from_args
from gqnbench.commands.tables import print_table
from gqnbench.config import ModelConfig
from gqnbench.models import build_model, describe_model, list_models
from gqnbench.plugins import BROKEN, PLUGIN_MODELS
from gqnbench.presets import Preset, list_presets


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta_count(name: str, cfg: ModelConfig) -> int:
    with torch.device("meta"):  # counts without allocating paper-size weights
        return count_parameters(build_model(name, cfg))


def _rows(preset_name: str, preset: Preset) -> list[dict[str, str]]:
    """The table rows of one preset: every model's count and sizes."""
    rows = []
    for name in list_models():
        if name not in preset.models:  # a plugin without a config at this preset
            rows.append(
                {"model": name, "preset": preset_name, "parameters": "-", "configuration": "no config at this preset"}
            )
            continue
        cfg = preset.model_config(name)
        summary = (
            f"{cfg.image_size}x{cfg.image_size}, L={cfg.num_layers}, hidden={cfg.hidden_channels}, "
            f"r={cfg.r_channels} ({cfg.representation}), z={cfg.z_channels}, "
            f"{'shared' if cfg.shared_core else 'per-step'} cores"
        )
        rows.append(
            {
                "model": name,
                "preset": preset_name,
                "parameters": f"{_meta_count(name, cfg):,}",
                "configuration": summary,
            }
        )
        if name == "metagqn" and not cfg.include_unused_prior_head:
            full = _meta_count(name, replace(cfg, include_unused_prior_head=True))
            rows.append({"model": "", "preset": "", "parameters": f"{full:,}",
                         "configuration": "with the authors' unused prior head (the study's count)"})  # fmt: skip
    return rows


def _run(args: argparse.Namespace) -> int:
    names = list_presets() if args.preset == "all" else [args.preset]
    presets = []
    for preset_name in names:  # resolve every preset first, so a bad name or override fails before output
        args.preset = preset_name
        presets.append((preset_name, preset_from_args(args)))
    rows = [row for preset_name, preset in presets for row in _rows(preset_name, preset)]
    print_table(rows, right={"parameters"})
    print()
    for name in list_models():
        source = f" [plugin: {PLUGIN_MODELS[name]}]" if name in PLUGIN_MODELS else ""
        print(f"{name}: {describe_model(name)}{source}")
    for where, why in BROKEN.items():
        print(f"not available ({where}): {why}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list models (plugins too) and presets with parameter counts")
    add_preset_arguments(p, default="all")
    p.set_defaults(func=_run)
