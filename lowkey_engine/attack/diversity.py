"""Input diversity on the aligned faces the surrogates see: transforms drawn at random each step,
so the change cannot lean on one surrogate's exact view of the face and transfers better to
recognizers it never saw.

Each transform is differentiable (grid_sample, indexing) and draws its own parameters per face
from the attack's generator, so a face's draws do not depend on the other faces in its batch.
Faces are NCHW RGB in [0, 1], already aligned to a recognizer's input.

- "resize_pad" (DI, Xie et al., CVPR 2019): shrink the face to a random share in
  [`resize_min`, 1] of the side and place it at a random offset, the border filled with grey.
- "block_shuffle" (BSR, Wang et al., CVPR 2024): cut the face into `blocks` x `blocks` tiles,
  shuffle them, and rotate each tile by up to +-`rotation_deg` about its centre.
- "structure" (SIA, Wang et al., ICCV 2023): cut the face into tiles and give each tile one
  random light transform of its own (shift, flip, scale of its contrast, a small rotation).

    diversity = InputDiversity("block_shuffle", probability=0.5)
    seen = diversity(aligned, generator)           # same shape as aligned
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("none", "resize_pad", "block_shuffle", "structure")

#: Grey that fills what a shrunk face leaves uncovered, [0, 1].
PAD_GREY = 0.5


@dataclass(frozen=True)
class InputDiversity:
    """One kind of random transform of aligned faces, applied to each face with `probability`.

    kind: one of KINDS; probability: chance per face per step, in [0, 1]; resize_min: smallest
    share of the side a shrunk face keeps, (0, 1]; blocks: tiles per side (>= 2) for the tiled
    kinds; rotation_deg: largest rotation of a tile, degrees."""

    kind: str = "none"
    probability: float = 0.5
    resize_min: float = 0.85
    blocks: int = 2
    rotation_deg: float = 24.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"input diversity must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0 <= self.probability <= 1:
            raise ValueError(f"diversity probability must be in [0, 1], got {self.probability}")
        if not 0 < self.resize_min <= 1:
            raise ValueError(f"resize_min must be in (0, 1], got {self.resize_min}")
        if self.blocks < 2:
            raise ValueError(f"blocks must be >= 2, got {self.blocks}")

    @property
    def enabled(self) -> bool:
        return self.kind != "none" and self.probability > 0

    def __call__(self, faces: Tensor, generator: torch.Generator) -> Tensor:
        """The faces (N, C, S, S), each transformed with `probability`; the others as they were."""
        if not self.enabled:
            return faces
        count = faces.shape[0]
        chosen = (torch.rand(count, generator=generator) < self.probability).to(faces.device)
        if self.kind == "resize_pad":
            seen = self._resize_pad(faces, generator)
        elif self.kind == "block_shuffle":
            seen = self._block_shuffle(faces, generator)
        else:
            seen = self._structure(faces, generator)
        return torch.where(chosen.view(-1, 1, 1, 1), seen, faces)

    def _uniform(self, generator: torch.Generator, *shape: int, device) -> Tensor:
        return torch.rand(*shape, generator=generator).to(device)

    def _resize_pad(self, faces: Tensor, generator: torch.Generator) -> Tensor:
        count = faces.shape[0]
        share = self.resize_min + (1 - self.resize_min) * self._uniform(generator, count, device=faces.device)
        # the shrunk face's centre may sit anywhere that keeps it inside the frame
        room = 1 - share
        offset = (self._uniform(generator, count, 2, device=faces.device) * 2 - 1) * room[:, None]
        theta = faces.new_zeros(count, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / share
        theta[:, :, 2] = -offset / share[:, None]
        grid = F.affine_grid(theta, list(faces.shape), align_corners=False)
        return F.grid_sample(faces - PAD_GREY, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False) + PAD_GREY

    def _tiles(self, faces: Tensor) -> tuple[Tensor, int]:
        """(N, B*B, C, t, t) tiles of faces cropped to a multiple of `blocks`, and the tile side."""
        count, channels, size, _ = faces.shape
        tile = size // self.blocks
        used = faces[..., :tile * self.blocks, :tile * self.blocks]
        tiles = used.unfold(2, tile, tile).unfold(3, tile, tile)          # N, C, B, B, t, t
        return tiles.permute(0, 2, 3, 1, 4, 5).reshape(count, self.blocks ** 2, channels, tile, tile), tile

    def _untile(self, tiles: Tensor, faces: Tensor, tile: int) -> Tensor:
        count, _, channels, _, _ = tiles.shape
        side = tile * self.blocks
        grid = tiles.view(count, self.blocks, self.blocks, channels, tile, tile).permute(0, 3, 1, 4, 2, 5)
        out = faces.clone()
        out[..., :side, :side] = grid.reshape(count, channels, side, side)
        return out

    def _rotate(self, tiles: Tensor, angles: Tensor, scale: Tensor | None = None) -> Tensor:
        """Each tile (K, C, t, t) rotated by its angle (K,) radians about its centre, edges
        replicated; optionally zoomed by `scale` (K,)."""
        cos, sin = torch.cos(angles), torch.sin(angles)
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], -1),
                             torch.stack([sin, cos, torch.zeros_like(cos)], -1)], 1)
        if scale is not None:
            theta[:, :, :2] = theta[:, :, :2] / scale.view(-1, 1, 1)
        grid = F.affine_grid(theta, list(tiles.shape), align_corners=False)
        return F.grid_sample(tiles, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _block_shuffle(self, faces: Tensor, generator: torch.Generator) -> Tensor:
        tiles, tile = self._tiles(faces)
        count, blocks = tiles.shape[:2]
        order = torch.argsort(torch.rand(count, blocks, generator=generator), dim=1).to(faces.device)
        shuffled = tiles[torch.arange(count, device=faces.device)[:, None], order]
        angles = (self._uniform(generator, count * blocks, device=faces.device) * 2 - 1) \
            * math.radians(self.rotation_deg)
        rotated = self._rotate(shuffled.flatten(0, 1), angles).view_as(shuffled)
        return self._untile(rotated, faces, tile)

    def _structure(self, faces: Tensor, generator: torch.Generator) -> Tensor:
        tiles, tile = self._tiles(faces)
        count, blocks = tiles.shape[:2]
        flat = tiles.flatten(0, 1)
        k = flat.shape[0]
        angles = (self._uniform(generator, k, device=faces.device) * 2 - 1) * math.radians(self.rotation_deg / 3)
        zoom = 1 + (self._uniform(generator, k, device=faces.device) * 2 - 1) * 0.1
        moved = self._rotate(flat, angles, zoom)
        flip = self._uniform(generator, k, device=faces.device) < 0.5
        moved = torch.where(flip.view(-1, 1, 1, 1), moved.flip(-1), moved)
        mean = moved.mean((1, 2, 3), keepdim=True)
        contrast = 1 + (self._uniform(generator, k, device=faces.device) * 2 - 1) * 0.2
        moved = ((moved - mean) * contrast.view(-1, 1, 1, 1) + mean).clamp(0, 1)
        return self._untile(moved.view_as(tiles), faces, tile)
