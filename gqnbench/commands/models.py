"""``gqnbench models``: list registered models (plugins too) and presets with their parameter counts."""

from __future__ import annotations

import argparse

import torch

from gqnbench.commands.common import add_preset_arguments, preset_from_args
from gqnbench.models import build_model, describe_model, list_models
from gqnbench.plugins import BROKEN, PLUGIN_MODELS
from gqnbench.presets import list_presets


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _run(args: argparse.Namespace) -> int:
    names = list_presets() if args.preset == "all" else [args.preset]
    presets = []
    for preset_name in names:  # resolve every preset first, so a bad name or override fails before output
        args.preset = preset_name
        presets.append((preset_name, preset_from_args(args)))
    print(f"{'model':<10} {'preset':<7} {'parameters':>14}  configuration")
    for preset_name, preset in presets:
        for name in list_models():
            if name not in preset.models:  # a plugin without a config at this preset
                print(f"{name:<10} {preset_name:<7} {'-':>14}  no config at this preset")
                continue
            cfg = preset.model_config(name)
            with torch.device("meta"):  # counts without allocating paper-size weights
                n = count_parameters(build_model(name, cfg))
            summary = (
                f"{cfg.image_size}x{cfg.image_size}, L={cfg.num_layers}, hidden={cfg.hidden_channels}, "
                f"r={cfg.r_channels} ({cfg.representation}), z={cfg.z_channels}, "
                f"{'shared' if cfg.shared_core else 'per-step'} cores"
            )
            print(f"{name:<10} {preset_name:<7} {n:>14,}  {summary}")
            if name == "metagqn" and not cfg.include_unused_prior_head:
                with torch.device("meta"):
                    from dataclasses import replace

                    n_full = count_parameters(build_model(name, replace(cfg, include_unused_prior_head=True)))
                print(f"{'':<10} {'':<7} {n_full:>14,}  with the authors' unused prior head (the study's count)")
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
