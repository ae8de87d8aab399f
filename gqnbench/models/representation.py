"""Scene representation r = sum_k f(x_k, v_k) over context views (SPEC section 2).

``pool``: r is C x 1 x 1 (average over the 16x16 map). ``tower``: the same layers, r kept
at C x H/4 x W/4. Both have 1,962,368 parameters at the paper sizes. Layer names c1..c8
follow the SPEC table. Context views arrive packed with a scene index, so scenes may
have different numbers of views and the sum is an ``index_add``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gqnbench.models.layout import in_layout_of


class Representation(nn.Module):
    def __init__(self, r_channels: int = 256, viewpoint_dim: int = 7, pool: bool = True) -> None:
        super().__init__()
        c, half = r_channels, r_channels // 2
        self.pool = pool
        self.c1 = nn.Conv2d(3, c, 2, stride=2)
        self.c2 = nn.Conv2d(c, c, 2, stride=2)
        self.c3 = nn.Conv2d(c, half, 3, padding=1)
        self.c4 = nn.Conv2d(half, c, 2, stride=2)
        self.c5 = nn.Conv2d(c + viewpoint_dim, c, 3, padding=1)
        self.c6 = nn.Conv2d(c + viewpoint_dim, half, 3, padding=1)
        self.c7 = nn.Conv2d(half, c, 3, padding=1)
        self.c8 = nn.Conv2d(c, c, 1)

    def encode(self, images: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """f(x, v) for each view: [N, 3, H, W], [N, 7] -> [N, C, h, w] (h = H/4, or 1 when pooled)."""
        skip = F.relu(self.c1(images))
        x = F.relu(self.c2(skip)) + F.relu(self.c4(F.relu(self.c3(skip))))
        v = in_layout_of(viewpoints[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3]), x)
        x = torch.cat((x, v), dim=1)
        x = F.relu(self.c5(x)) + F.relu(self.c7(F.relu(self.c6(x))))
        x = F.relu(self.c8(x))
        if self.pool:
            x = x.mean(dim=(2, 3), keepdim=True)
        return x

    def forward(
        self, images: torch.Tensor, viewpoints: torch.Tensor, scene: torch.Tensor, num_scenes: int
    ) -> torch.Tensor:
        """r per scene: the sum of f over that scene's context views -> [B, C, h, w]."""
        per_view = self.encode(images, viewpoints)
        r = in_layout_of(per_view.new_zeros(num_scenes, *per_view.shape[1:]), per_view)
        return r.index_add(0, scene, per_view)
