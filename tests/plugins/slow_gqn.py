"""A test plugin for the nightly gate: the reference GQN with its work done twice, the slowdown it must catch.

``gqn_slow`` has ``gqn``'s config at every preset and returns the same kind of loss and
prediction, then runs the whole forward pass once more: in training the second loss joins
the first with weight zero, so its backward pass runs too. A step costs about twice a
``gqn`` step, as if every kernel had become twice as slow, while the results keep ``gqn``'s
shapes and meaning.
"""

from dataclasses import replace

from gqnbench.models import register_model
from gqnbench.models.gqn import GQN


@register_model("gqn_slow", "gqn doing its work twice (a nightly-gate test)", config=lambda p: p.model_config("gqn"))
class SlowGQN(GQN):
    def loss(self, episode, step=0):
        out = super().loss(episode, step)
        again = super().loss(episode, step)
        return replace(out, loss=out.loss + 0.0 * again.loss)

    def predict(self, episode, use_mean=False):
        super().predict(episode, use_mean)
        return super().predict(episode, use_mean)
