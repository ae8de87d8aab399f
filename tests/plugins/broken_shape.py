"""A broken plugin for the tests: predict() returns [B*K, 3, H, W] instead of [B, K, 3, H, W]."""

from gqnbench.models import register_model
from gqnbench.models.metagqn import MetaGQN


@register_model(
    "flatpredict", "breaks the interface: flat predict()", config=lambda preset: preset.model_config("metagqn")
)
class FlatPredict(MetaGQN):
    def predict(self, episode, use_mean=False):
        return super().predict(episode, use_mean).flatten(0, 1)
