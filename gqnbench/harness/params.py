"""Parameter counts, two ways: all parameters of each module, and those that receive a gradient.

"Used by the objective" means: after one training step (``model(episode).backward()``)
the parameter's ``.grad`` is not None. This is what separates the study's 18,713,091
for the proposed model from the 17,074,179 its objective actually trains: the authors'
code keeps a 1,638,912-parameter prior head eta_pi that the loss never calls (SPEC
section 3). Counting runs on the meta device by default, so paper-size models cost no
memory and no compute; the autograd graph (and so which parameters get a gradient) is
the same as on a real device.

``costs.json`` field (one entry per model)::

    params[model] = {"total": int, "used_by_objective": int, "unused": int,
                     "per_module": {group: {"total": int, "used": int}},
                     "config": {...ModelConfig...}, "authors_layout": bool}

Groups come from ``model.module_groups()``; parameters outside every group land in
``"other"``, so the per-module totals always sum to the total.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from gqnbench.data.episode import Episode
from gqnbench.harness.common import as_preset, make_episode, model_config
from gqnbench.models import GQNFamilyModel, build_model
from gqnbench.presets import Preset


@dataclass
class ParamCount:
    total: int
    used_by_objective: int
    per_module: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def unused(self) -> int:
        return self.total - self.used_by_objective

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "used_by_objective": self.used_by_objective,
            "unused": self.unused,
            "per_module": self.per_module,
        }


def _group_params(model: GQNFamilyModel) -> dict[str, list[nn.Parameter]]:
    """Unique parameters per module group, in group order; leftovers in ``other``."""
    seen: set[int] = set()
    groups: dict[str, list[nn.Parameter]] = {}
    for name, modules in model.module_groups().items():
        params = []
        for module in modules:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        groups[name] = params
    rest = [p for p in model.parameters() if id(p) not in seen]
    if rest:
        groups["other"] = rest
    return groups


def count_parameters(model: GQNFamilyModel, episode: Episode, step: int = 0) -> ParamCount:
    """Count all parameters and those that get a gradient from one backward of the training loss.

    Runs ``model(episode, step).backward()`` once; existing ``.grad`` fields are cleared before
    and after, so the model is left as it was (apart from its RNG draw).
    """
    model.zero_grad(set_to_none=True)
    model(episode, step).backward()
    per_module: dict[str, dict[str, int]] = {}
    for name, params in _group_params(model).items():
        per_module[name] = {
            "total": sum(p.numel() for p in params),
            "used": sum(p.numel() for p in params if p.grad is not None),
        }
    total = sum(p.numel() for p in model.parameters())
    used = sum(p.numel() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return ParamCount(total=total, used_by_objective=used, per_module=per_module)


def parameter_report(
    model: str,
    preset: str | Preset = "paper",
    authors_layout: bool = True,
    device: str | torch.device = "meta",
) -> dict:
    """``params[model]`` of costs.json for a preset (metagqn with its unused head when ``authors_layout``)."""
    preset = as_preset(preset)
    cfg = model_config(model, preset, authors_layout=authors_layout)
    with torch.device(device):
        net = build_model(model, cfg)
    # Two scenes with one query each: enough to run every branch of the objective once.
    episode = make_episode(cfg, batch=2, device=device)
    counts = count_parameters(net, episode)
    return {**counts.as_dict(), "authors_layout": authors_layout, "config": dataclasses.asdict(cfg)}
