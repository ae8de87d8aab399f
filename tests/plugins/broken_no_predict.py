"""A broken plugin for the tests: a model without predict()."""

from gqnbench.models import GQNFamilyModel, register_model
from gqnbench.models.metagqn import MetaGQN


@register_model("nopredict", "breaks the interface: no predict()", config=lambda preset: preset.model_config("metagqn"))
class NoPredict(GQNFamilyModel):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.inner = MetaGQN(cfg)

    def loss(self, episode, step=0):
        return self.inner.loss(episode, step)

    def module_groups(self):
        return self.inner.module_groups()

    def pixel_sigma(self, step):
        return 1.0
