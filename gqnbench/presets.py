"""The preset registry: ``paper``, ``paper-short``, ``cpu`` and ``tiny`` sizes for every model, data and training.

``paper`` is the study's configuration (SPEC sections 2-4). ``paper-short`` is the study's sizes
for a run of minutes on one GPU: the schedules compressed to the run as ``cpu`` compresses them
(:func:`compressed_schedules`) and an embedded data set large enough that the run sees each
scene a few times only. ``cpu`` is the configuration the
learning study (``gqnbench learning-study``) found to learn scene structure within a 2-core CPU
budget: 16x16 images (core grid 4x4), 32 hidden and r channels, L = 4, batch 32, constant lr 1e-3,
GQN's sigma annealed over 3,000 steps, metagqn's z = r = 32 channels (the study's z = r layout).
A bf16 step on one core takes 45 ms (gqn) / 37 ms (metagqn) (measured on the 2-core AMD EPYC host).
``tiny`` is for tests: milliseconds per step. Any field can be overridden with
``section.field=value`` strings (sections: model, gqn, metagqn, train, data, and the name of
any plugin model).

A plugin model (:mod:`gqnbench.plugins`) gets its config at each preset from what it passed to
``register_model(..., config=...)``: :func:`get_preset` adds it to ``Preset.models`` beside the
built-in two, before the overrides are applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gqnbench.config import ConfigError, DataConfig, ModelConfig, TrainConfig, replace_fields

# The study's two models: the default of every --models option. Plugins add to list_models().
MODEL_NAMES = ("gqn", "metagqn")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    models: dict[str, ModelConfig] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def model_config(self, model: str) -> ModelConfig:
        if model not in self.models:
            raise KeyError(f"preset {self.name!r} has no config for model {model!r}; it has {sorted(self.models)}")
        return self.models[model]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _models(base: ModelConfig, metagqn_z: int, **metagqn_extra: Any) -> dict[str, ModelConfig]:
    return {
        "gqn": base,
        # The proposed model: tower representation, z = r channels, fixed pixel sigma 1.
        "metagqn": dataclasses.replace(
            base, representation="tower", z_channels=metagqn_z, sigma_start=1.0, sigma_end=1.0, **metagqn_extra
        ),
    }


_PRESETS: dict[str, Preset] = {}

# How a short run compresses the paper's schedules (the cpu preset's rule, from its learning study):
# GQN's pixel sigma anneals 2.0 -> 0.7 over this fraction of the run's steps (the paper: over 200k
# steps), and the learning rate is constant (the paper's 1.6M-step anneal barely moves in a short run).
SIGMA_ANNEAL_FRACTION = 0.6
EVALS_PER_RUN = 16


def compressed_schedules(steps: int) -> dict[str, Any]:
    """Overrides that fit a run of ``steps`` updates: the sigma anneal and the evaluations scaled to it, and one
    checkpoint at the end (a run of minutes restarts cheaper than it writes a paper-size checkpoint often)."""
    if steps < 1:
        raise ConfigError(f"a run needs at least one step, got {steps}")
    return {
        "train.steps": steps,
        "gqn.sigma_anneal_steps": max(1, round(SIGMA_ANNEAL_FRACTION * steps)),
        "train.eval_every": max(1, steps // EVALS_PER_RUN),
        "train.checkpoint_every": steps,
    }


def register_preset(preset: Preset) -> Preset:
    _PRESETS[preset.name] = preset
    return preset


register_preset(
    Preset(
        name="paper",
        description="the study's configuration: 64x64, L=12, 128 hidden, 256-channel r, batch 36",
        models=_models(ModelConfig(), metagqn_z=256),
        train=TrainConfig(batch_size=36, steps=35_000, eval_every=1000, checkpoint_every=1000),
        data=DataConfig(image_size=64, generate_scenes=20_000, val_scenes=256),
    )
)
# paper-short: each of the 10,800 training scenes (12,000 generated, 9:1) is drawn about 13 times in
# 4,000 steps of 36 scenes, each time with its own context views and query out of 15: too few repeats
# for a 49M-parameter model to memorise its training set, so the validation curve measures learning.
# Rendering them takes about a minute on 14 cores (15 scenes/s a core with supersampling).
_PAPER_SHORT_STEPS = 4_000
_paper_short = Preset(
    name="paper-short",
    description="the study's sizes (64x64, L=12, 128 hidden, 256-channel r, batch 36) for minutes on one GPU: "
    "bf16, constant lr 1e-3, GQN sigma annealed over 60% of the run, 12,000 embedded scenes",
    models=_models(ModelConfig(), metagqn_z=256, latent_logvar_bias=-4.0),
    train=TrainConfig(batch_size=36, lr_start=1e-3, lr_end=1e-3, lr_anneal_steps=1, amp="bf16"),
    data=DataConfig(image_size=64, generate_scenes=12_000, val_scenes=256, num_workers=3),
)
register_preset(
    Preset(
        name="cpu",
        description="reduced for a 2-core CPU: 16x16, L=4, 32 hidden, 32-channel r, batch 32, lr 1e-3",
        models=_models(
            ModelConfig(
                image_size=16,
                hidden_channels=32,
                r_channels=32,
                num_layers=4,
                z_channels=3,
                sigma_anneal_steps=3_000,
            ),
            metagqn_z=32,
            # With logvar about 0 at the start, z carries unit noise and metagqn sat at 0.94x the
            # mean-frame MSE for 1,750 steps in one seed; -4 (std 0.14) left that plateau by step 750.
            latent_logvar_bias=-4.0,
        ),
        # Chosen by the learning study (gqnbench.training.learning_study, reports/example):
        # constant lr 1e-3, batch 32; 5,000 steps is about 3.5 minutes per run on one core in bf16.
        # amp=auto: bf16 where it is the faster precision on this host (AMX CPUs), else fp32.
        train=TrainConfig(
            batch_size=32,
            steps=5_000,
            lr_start=1e-3,
            lr_end=1e-3,
            lr_anneal_steps=1,
            eval_every=250,
            checkpoint_every=1000,
            amp="auto",
        ),
        data=DataConfig(image_size=16, generate_scenes=1200, val_scenes=120),
    )
)
register_preset(
    Preset(
        name="tiny",
        description="for tests: 16x16, L=2, 8 hidden, 16-channel r, batch 4 (milliseconds a step)",
        models=_models(
            ModelConfig(
                image_size=16,
                hidden_channels=8,
                r_channels=16,
                num_layers=2,
                z_channels=2,
                sigma_anneal_steps=100,
            ),
            metagqn_z=4,
        ),
        train=TrainConfig(batch_size=4, steps=20, lr_start=2e-3, lr_end=2e-3, eval_every=10, checkpoint_every=10),
        data=DataConfig(image_size=16, generate_scenes=80, val_scenes=8),
    )
)


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str, overrides: Mapping[str, Any] | None = None) -> Preset:
    """A preset with ``{"section.field": value}`` overrides applied.

    Sections: ``model`` (every model), ``gqn`` / ``metagqn`` / a plugin's name (one model),
    ``train``, ``data``. Registered plugin models get their config here (see the module doc).
    """
    if name not in _PRESETS:
        raise KeyError(f"unknown preset {name!r}; presets: {', '.join(list_presets())}")
    return apply_overrides(_with_plugin_models(_PRESETS[name]), overrides)


def apply_overrides(preset: Preset, overrides: Mapping[str, Any] | None) -> Preset:
    """``preset`` with ``{"section.field": value}`` overrides applied (sections: see :func:`get_preset`)."""
    if not overrides:
        return preset
    by_section: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if "." not in key:
            raise ConfigError(f"override {key!r} needs a section: model., gqn., metagqn., train. or data.")
        section, fld = key.split(".", 1)
        by_section.setdefault(section, {})[fld] = value
    models = dict(preset.models)
    train, data = preset.train, preset.data
    for section, changes in by_section.items():
        if section == "model":
            models = {m: replace_fields(c, changes, "model.") for m, c in models.items()}
        elif section in models:
            models[section] = replace_fields(models[section], changes, f"{section}.")
        elif section == "train":
            train = replace_fields(train, changes, "train.")
        elif section == "data":
            data = replace_fields(data, changes, "data.")
        else:
            raise ConfigError(f"unknown override section {section!r}; use model, {', '.join(models)}, train or data")
    return dataclasses.replace(preset, models=models, train=train, data=data)


def _with_plugin_models(preset: Preset) -> Preset:
    """``preset`` with a config for every registered plugin model that has one at this preset."""
    from gqnbench.models import list_models, model_config_source
    from gqnbench.plugins import ensure_plugins

    ensure_plugins()
    extra: dict[str, ModelConfig] = {}
    for model in list_models():
        if model in preset.models:
            continue
        cfg = plugin_model_config(preset, model, model_config_source(model))
        if cfg is not None:
            extra[model] = cfg
    return dataclasses.replace(preset, models={**preset.models, **extra}) if extra else preset


def plugin_model_config(preset: Preset, model: str, source: Any) -> ModelConfig | None:
    """A plugin's config at ``preset`` from its ``register_model(config=...)``; None where it has none."""
    if source is None:
        cfg = preset.models.get("gqn")
    elif isinstance(source, Mapping):
        cfg = source.get(preset.name)
    elif callable(source):
        try:
            cfg = source(preset)
        except Exception as exc:  # noqa: BLE001 - a plugin's own bug: say whose
            raise ConfigError(
                f"model {model!r}: its config function failed at preset {preset.name!r}: {exc!r}"
            ) from exc
    else:
        raise ConfigError(
            f"model {model!r}: config= must be a mapping preset -> ModelConfig or a function of the preset"
        )
    if cfg is not None and not isinstance(cfg, ModelConfig):
        raise ConfigError(
            f"model {model!r}: its config at preset {preset.name!r} is a {type(cfg).__name__}, not a ModelConfig"
        )
    return cfg


register_preset(apply_overrides(_paper_short, compressed_schedules(_PAPER_SHORT_STEPS)))
