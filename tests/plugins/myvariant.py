"""The README's worked plugin: the proposed model (metagqn) with the context views' mean instead of their sum."""

from gqnbench.models import register_model
from gqnbench.models.metagqn import MetaGQN
from gqnbench.models.representation import Representation


class MeanRepresentation(Representation):
    def forward(self, images, viewpoints, scene, num_scenes):
        r = super().forward(images, viewpoints, scene, num_scenes)  # sum over each scene's views
        views = r.new_zeros(num_scenes).index_add(0, scene, r.new_ones(scene.shape[0]))
        return r / views.clamp(min=1).view(-1, 1, 1, 1)


@register_model(
    "myvariant", "metagqn, context mean instead of sum", config=lambda preset: preset.model_config("metagqn")
)
class MeanMetaGQN(MetaGQN):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.representation = MeanRepresentation(cfg.r_channels, cfg.viewpoint_dim, pool=cfg.representation == "pool")
