"""A smooth sub-pixel warp of each face: a second way to change it, beside adding to its pixels.

Recognizers read the geometry of a face (where the eyes, brows, nose and mouth corners sit) as much
as its shading; people barely notice a smooth displacement of a pixel or less. The warp is a
displacement field given at `grid` x `grid` control points over the working crop (so it is smooth
by construction), upsampled bicubically to every pixel and faded out with the crop's feathering
mask, then applied with `grid_sample`. Displacements are in working-crop pixels, each component
within +-`max_px`.

    warp = SmoothWarp(max_px=0.75, grid=8)
    field = warp.zeros(crops)                        # (N, 2, grid, grid), the parameters
    moved = warp.apply(crops, field, mask)           # differentiable in `field` and `crops`
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class SmoothWarp:
    max_px: float
    grid: int = 8

    def __post_init__(self):
        if self.max_px < 0:
            raise ValueError(f"max_px must be >= 0, got {self.max_px}")
        if self.grid < 2:
            raise ValueError(f"grid must be >= 2 control points per side, got {self.grid}")

    @property
    def enabled(self) -> bool:
        return self.max_px > 0

    def zeros(self, crops: Tensor) -> Tensor:
        """No displacement: the parameters (N, 2, grid, grid) for these crops (N, C, S, S)."""
        return crops.new_zeros(crops.shape[0], 2, self.grid, self.grid)

    def project(self, field: Tensor) -> Tensor:
        """Each control point's displacement within +-max_px, per component."""
        return field.clamp(-self.max_px, self.max_px)

    def displacement(self, field: Tensor, mask: Tensor) -> Tensor:
        """Per-pixel displacement (N, 2, S, S) in pixels: the field upsampled and faded by `mask`
        (N, 1, S, S), so the crop's edge does not move."""
        size = mask.shape[-2:]
        return F.interpolate(field, size=size, mode="bicubic", align_corners=True) * mask

    def apply(self, crops: Tensor, field: Tensor, mask: Tensor) -> Tensor:
        """The crops (N, C, S, S) warped by `field`: output pixel p takes the crop at
        p + displacement(p) (bilinear, edges replicated)."""
        n, _, height, width = crops.shape
        moved = self.displacement(field, mask)
        identity = torch.eye(2, 3, device=crops.device, dtype=crops.dtype).expand(n, 2, 3)
        base = F.affine_grid(identity, [n, 1, height, width], align_corners=False)
        offset = torch.stack([moved[:, 0] * (2.0 / width), moved[:, 1] * (2.0 / height)], dim=-1)
        return F.grid_sample(crops, base + offset, mode="bilinear", padding_mode="border", align_corners=False)
