"""Smooth warps of each face: a second way to change it, beside adding to its pixels.

Recognizers read the geometry of a face (where the eyes, brows, nose and mouth corners sit) as much
as its shading; people barely notice a smooth displacement of a few pixels in the right places. A
warp is a displacement field given at `grid` x `grid` control points over the working crop (so it
is smooth by construction), upsampled to every pixel and scaled by a per-pixel *reach* (how many
pixels that pixel may move), then applied with `grid_sample`. Two kinds:

- `SmoothWarp` (`warp_px`): each component within +-`max_px` working pixels, faded out with the
  crop's feathering mask; the whole crop moves (the first trial, docs/research.md).
- `GuidedWarp` (`warp_face_share`): geometry with its own budget. Every displacement vector's
  length is at most `face_share` x the face's width, whatever the face's size: the control
  points are projected onto the unit disc and upsampled bilinearly (a convex mix, so no pixel
  exceeds it), then scaled by the reach, which is the budget times the face's mobility map
  (face_parts.py: the nose, mouth and cheeks move, the eyes, brows and outline hold still, the
  crop's border is faded out).

    warp = GuidedWarp(face_share=0.01, grid=8)
    reach = warp.reach(landmarks, mask, face_widths)     # (N, 1, S, S) pixels, once per attack
    field = warp.zeros(crops)                            # (N, 2, grid, grid), the parameters
    moved = warp.apply(crops, field, reach)              # differentiable in `field` and `crops`
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .face_parts import five_point_parts, mobility


def sample_displaced(crops: Tensor, displacement: Tensor) -> Tensor:
    """The crops (N, C, S, S) with output pixel p taken at p + displacement(p) (N, 2, S, S),
    (x, y) in pixels (bilinear, edges replicated)."""
    n, _, height, width = crops.shape
    identity = torch.eye(2, 3, device=crops.device, dtype=crops.dtype).expand(n, 2, 3)
    base = F.affine_grid(identity, [n, 1, height, width], align_corners=False)
    offset = torch.stack([displacement[:, 0] * (2.0 / width), displacement[:, 1] * (2.0 / height)], dim=-1)
    return F.grid_sample(crops, base + offset, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass(frozen=True)
class ControlGridWarp:
    """What every warp shares: `grid` x `grid` control points (the parameters, (N, 2, grid, grid)),
    upsampled to every pixel (`upsampling`), scaled by a reach (N, 1, S, S), applied. Subclasses
    say what the parameters mean (`step_unit`, `project`) and how far each pixel may go (`reach`)."""

    grid: int = 8
    upsampling = "bicubic"

    def __post_init__(self):
        if self.grid < 2:
            raise ValueError(f"grid must be >= 2 control points per side, got {self.grid}")

    @property
    def enabled(self) -> bool:
        raise NotImplementedError

    @property
    def step_unit(self) -> float:
        """The parameters' scale: a step of share s moves a control point by up to s x this."""
        raise NotImplementedError

    def project(self, field: Tensor) -> Tensor:
        raise NotImplementedError

    def reach(self, landmarks: Tensor, mask: Tensor, face_widths: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def zeros(self, crops: Tensor) -> Tensor:
        """No displacement: the parameters (N, 2, grid, grid) for these crops (N, C, S, S)."""
        return crops.new_zeros(crops.shape[0], 2, self.grid, self.grid)

    def displacement(self, field: Tensor, reach: Tensor) -> Tensor:
        """Per-pixel displacement (N, 2, S, S) in pixels: the field upsampled and scaled by `reach`
        (N, 1, S, S), so the crop's edge does not move."""
        upsampled = F.interpolate(field, size=reach.shape[-2:], mode=self.upsampling, align_corners=True)
        return upsampled * reach

    def apply(self, crops: Tensor, field: Tensor, reach: Tensor) -> Tensor:
        """The crops (N, C, S, S) warped by `field`: output pixel p takes the crop at
        p + displacement(p) (bilinear, edges replicated)."""
        return sample_displaced(crops, self.displacement(field, reach))


@dataclass(frozen=True)
class SmoothWarp(ControlGridWarp):
    """Each control point's displacement within +-`max_px` working pixels per component; the
    reach is the crop's feathering mask, so the whole face may move."""

    max_px: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.max_px < 0:
            raise ValueError(f"max_px must be >= 0, got {self.max_px}")

    @property
    def enabled(self) -> bool:
        return self.max_px > 0

    @property
    def step_unit(self) -> float:
        return self.max_px

    def project(self, field: Tensor) -> Tensor:
        """Each control point's displacement within +-max_px, per component."""
        return field.clamp(-self.max_px, self.max_px)

    def reach(self, landmarks: Tensor, mask: Tensor, face_widths: Tensor | None = None) -> Tensor:
        """The feathering `mask` (N, 1, S, S) itself: the field is in pixels."""
        return mask


@dataclass(frozen=True)
class GuidedWarp(ControlGridWarp):
    """Geometry with its own budget: no displacement longer than `face_share` (0-1) of the face's
    width, and only where the face's mobility map lets it (module docstring). The parameters are
    in units of that budget, each control point's vector within the unit disc."""

    face_share: float = 0.0
    upsampling = "bilinear"                # a convex mix of the control points: the cap holds per pixel

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.face_share < 1:
            raise ValueError(f"face_share must be in [0, 1), got {self.face_share}")

    @property
    def enabled(self) -> bool:
        return self.face_share > 0

    @property
    def step_unit(self) -> float:
        return 1.0

    def project(self, field: Tensor) -> Tensor:
        """Each control point's vector (dim 1) onto the unit disc: its length at most 1."""
        return field / field.norm(dim=1, keepdim=True).clamp_min(1.0)

    def reach(self, landmarks: Tensor, mask: Tensor, face_widths: Tensor | None = None) -> Tensor:
        """How far each pixel may move, (N, 1, S, S) in pixels: face_share x the face's width
        (`face_widths` (N,), working pixels) x its mobility map from the five `landmarks`
        (N, 5, 2), faded by the feathering `mask`."""
        if face_widths is None:
            raise ValueError("a guided warp needs each face's width (face_widths, working pixels)")
        parts = five_point_parts(landmarks, face_widths, mask.shape[-1])
        budget = (self.face_share * face_widths).to(mask).view(-1, 1, 1, 1)
        return budget * mobility(parts, mask).to(mask)


def largest_displacement_share(displacement: Tensor, face_widths: Tensor) -> Tensor:
    """Per face (N,): the longest displacement vector (N, 2, S, S) as a share of the face's width
    (N,), both in working pixels."""
    return displacement.norm(dim=1).flatten(1).amax(1) / face_widths.to(displacement)
