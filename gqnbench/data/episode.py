"""The batch every model consumes: context views (packed, variable count per scene) and queries.

Context views are *packed*: ``context_images`` holds all context views of all scenes of
the batch one after another and ``context_scene`` says which scene each belongs to. This
lets every scene have its own number of views M (SPEC section 4: M ~ U{1..14} per scene)
without padding, so no compute is spent on views that do not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Episode:
    """A batch of B scenes: packed context views and one or more query views per scene.

    Shapes: ``context_images`` [N, 3, H, W] float in [0, 1]; ``context_viewpoints`` [N, 7];
    ``context_scene`` [N] int64 in [0, B); ``query_images`` [B, K, 3, H, W];
    ``query_viewpoints`` [B, K, 7]. Training uses K = 1.
    """

    context_images: torch.Tensor
    context_viewpoints: torch.Tensor
    context_scene: torch.Tensor
    query_images: torch.Tensor
    query_viewpoints: torch.Tensor

    @property
    def num_scenes(self) -> int:
        return int(self.query_viewpoints.shape[0])

    @property
    def num_queries(self) -> int:
        return int(self.query_viewpoints.shape[1])

    @property
    def num_context(self) -> int:
        return int(self.context_scene.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.query_images.shape[-1])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Episode:
        def move(t: torch.Tensor, floating: bool) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if (floating and dtype is not None) else None, non_blocking=True)

        return Episode(
            context_images=move(self.context_images, True),
            context_viewpoints=move(self.context_viewpoints, True),
            context_scene=move(self.context_scene, False),
            query_images=move(self.query_images, True),
            query_viewpoints=move(self.query_viewpoints, True),
        )

    def pin_memory(self) -> Episode:
        return Episode(*(t.pin_memory() for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (
            self.context_images,
            self.context_viewpoints,
            self.context_scene,
            self.query_images,
            self.query_viewpoints,
        )

    @classmethod
    def from_dense(
        cls,
        context_images: torch.Tensor,
        context_viewpoints: torch.Tensor,
        query_images: torch.Tensor,
        query_viewpoints: torch.Tensor,
    ) -> Episode:
        """Build from dense [B, M, ...] contexts (same M for every scene) and [B, (K,) ...] queries."""
        if context_images.dim() != 5:
            raise ValueError(f"context_images must be [B, M, 3, H, W], got {tuple(context_images.shape)}")
        b, m = context_images.shape[:2]
        if query_images.dim() == 4:
            query_images = query_images.unsqueeze(1)
        if query_viewpoints.dim() == 2:
            query_viewpoints = query_viewpoints.unsqueeze(1)
        scene = torch.arange(b, device=context_images.device).repeat_interleave(m)
        return cls(
            context_images=context_images.reshape(b * m, *context_images.shape[2:]),
            context_viewpoints=context_viewpoints.reshape(b * m, context_viewpoints.shape[-1]),
            context_scene=scene,
            query_images=query_images,
            query_viewpoints=query_viewpoints,
        )

    @classmethod
    def random(
        cls,
        batch_size: int,
        image_size: int,
        num_context: int = 3,
        num_queries: int = 1,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Episode:
        """Random images and viewpoints of the right shapes, for cost measurements and tests."""
        g = generator
        ci = torch.rand(batch_size, num_context, 3, image_size, image_size, generator=g)
        cv = torch.randn(batch_size, num_context, 7, generator=g)
        qi = torch.rand(batch_size, num_queries, 3, image_size, image_size, generator=g)
        qv = torch.randn(batch_size, num_queries, 7, generator=g)
        return cls.from_dense(ci, cv, qi, qv).to(device)
