"""Model registry (in the spirit of timm): ``build_model(name, config)``.

Owns the two GQN-family architectures, their ConvLSTM cell and the ModelConfig. May
import ``gqnbench.data.episode`` (the batch type) and ``gqnbench.metrics``; nothing else
of gqnbench (and, for a name it does not know, :mod:`gqnbench.plugins`). Register a new model
with :func:`register_model`; a model from outside the package (a plugin) is loaded by
:mod:`gqnbench.plugins` and registers the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gqnbench.config import ModelConfig
from gqnbench.models.base import GQNFamilyModel, LossOutput
from gqnbench.models.gqn import GQN
from gqnbench.models.metagqn import MetaGQN

_REGISTRY: dict[str, Callable[[ModelConfig], GQNFamilyModel]] = {}
_DESCRIPTIONS: dict[str, str] = {}
# How a preset gets a config for a model registered with ``config=``: a mapping preset name ->
# ModelConfig, or a function of the preset (see gqnbench.presets.get_preset). The built-in
# models' configs are written into the presets themselves.
_CONFIGS: dict[str, Mapping[str, ModelConfig] | Callable[[Any], ModelConfig] | None] = {}


def register_model(
    name: str,
    description: str = "",
    config: Mapping[str, ModelConfig] | Callable[[Any], ModelConfig] | None = None,
) -> Callable:
    """Register ``factory(config) -> model`` under ``name`` (use as a decorator on a class or function).

    ``config`` gives the model its sizes at each preset: ``{"tiny": ModelConfig(...), ...}``
    (presets left out have no config for it), or a function ``preset -> ModelConfig`` that
    derives it from the preset's own configs, e.g. ``lambda p: p.model_config("metagqn")``;
    None uses the preset's base (``gqn``) config.
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"model name must be letters, digits, '-' or '_', got {name!r}")

    def wrap(factory: Callable[[ModelConfig], GQNFamilyModel]):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description
        _CONFIGS[name] = config
        return factory

    return wrap


def unregister_model(name: str) -> None:
    """Remove a registered model (a plugin that failed its interface check; tests)."""
    for table in (_REGISTRY, _DESCRIPTIONS, _CONFIGS):
        table.pop(name, None)


def model_factory(name: str) -> Callable[[ModelConfig], GQNFamilyModel]:
    """What ``register_model`` was given for ``name`` (a class or a function)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _REGISTRY[name]


def model_config_source(name: str) -> Mapping[str, ModelConfig] | Callable[[Any], ModelConfig] | None:
    """The ``config=`` a model was registered with (None for the built-in models)."""
    return _CONFIGS.get(name)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def describe_model(name: str) -> str:
    return _DESCRIPTIONS.get(name, "")


def build_model(name: str, config: ModelConfig | None = None) -> GQNFamilyModel:
    """Instantiate a registered model; ``config`` defaults to ModelConfig() (paper sizes)."""
    if name not in _REGISTRY:
        # A worker process handed a resolved preset has not loaded the plugins yet. The one
        # upward import of this package, made only for a name it does not know.
        import importlib

        importlib.import_module("gqnbench.plugins").ensure_plugins()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _REGISTRY[name](config or ModelConfig())


register_model("gqn", "reference GQN (Eslami et al. 2018), ELBO with prior/posterior")(GQN)
register_model("metagqn", "meta-learning GQN of the 2019 study, context-only latent, no KL")(MetaGQN)

__all__ = [
    "GQNFamilyModel",
    "LossOutput",
    "ModelConfig",
    "build_model",
    "list_models",
    "register_model",
    "unregister_model",
    "describe_model",
    "model_factory",
    "model_config_source",
]
