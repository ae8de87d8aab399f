"""Model registry (in the spirit of timm): ``build_model(name, config)``.

Owns the two GQN-family architectures, their ConvLSTM cell and the ModelConfig. May
import ``gqnbench.data.episode`` (the batch type) and ``gqnbench.metrics``; nothing else
of gqnbench. Register a new model with :func:`register_model`.
"""

from __future__ import annotations

from collections.abc import Callable

from gqnbench.models.base import GQNFamilyModel, LossOutput
from gqnbench.models.config import ModelConfig
from gqnbench.models.gqn import GQN
from gqnbench.models.metagqn import MetaGQN

_REGISTRY: dict[str, Callable[[ModelConfig], GQNFamilyModel]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str = "") -> Callable:
    def wrap(factory: Callable[[ModelConfig], GQNFamilyModel]):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def describe_model(name: str) -> str:
    return _DESCRIPTIONS.get(name, "")


def build_model(name: str, config: ModelConfig | None = None) -> GQNFamilyModel:
    """Instantiate a registered model; ``config`` defaults to ModelConfig() (paper sizes)."""
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
    "describe_model",
]
