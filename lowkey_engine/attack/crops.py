"""Face crops: where each face's perturbation lives, and how it goes back into the photo.

Each face gets a square window around its box (with margin), taken from the full-resolution photo
and resized to one fixed working size, so every face in a photo attacks in one batch and the cost
depends on the number of faces, not on megapixels. The change computed on the working crop is
faded out towards the crop's edge (feathered: no hard square on flat backgrounds), resized back to
the window's photo pixels and added to the photo.

Coordinates are continuous pixels as the detector gives them ((0, 0) is the top-left corner of the
top-left pixel; x right, y down); images NCHW/CHW RGB in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .transforms import resize


@dataclass(frozen=True)
class CropWindow:
    """A square window of the photo: top-left (x0, y0) and side, in photo pixels (may overhang)."""

    x0: int
    y0: int
    side: int

    def to_working(self, points: Tensor, working_size: int) -> Tensor:
        """Photo coordinates (..., 2) -> working-crop coordinates."""
        return (points - points.new_tensor([self.x0, self.y0])) * (working_size / self.side)


def crop_window(box: Tensor | tuple[float, float, float, float], margin: float) -> CropWindow:
    """The square window of side `margin` x the box's longer side, centred on the box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(2, math.ceil(margin * max(x2 - x1, y2 - y1)))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return CropWindow(round(cx - side / 2), round(cy - side / 2), side)


def _overlap(window: CropWindow, height: int, width: int) -> tuple[slice, slice, slice, slice]:
    """(photo rows, photo cols, window rows, window cols) of the part of the window inside the photo."""
    top, left = max(window.y0, 0), max(window.x0, 0)
    bottom, right = min(window.y0 + window.side, height), min(window.x0 + window.side, width)
    return (slice(top, bottom), slice(left, right),
            slice(top - window.y0, bottom - window.y0), slice(left - window.x0, right - window.x0))


def extract(image: Tensor, window: CropWindow) -> tuple[Tensor, Tensor]:
    """The window's pixels (3, side, side), edges replicated where it overhangs the photo, and a
    validity mask (1, side, side): 1 inside the photo, 0 outside."""
    _, height, width = image.shape
    rows, cols, win_rows, win_cols = _overlap(window, height, width)
    inside = image[:, rows, cols]
    pad = (win_cols.start, window.side - win_cols.stop, win_rows.start, window.side - win_rows.stop)
    crop = F.pad(inside[None], pad, mode="replicate")[0] if any(pad) else inside
    valid = torch.zeros(1, window.side, window.side, device=image.device, dtype=image.dtype)
    valid[:, win_rows, win_cols] = 1.0
    return crop, valid


def feather_mask(size: int, feather: float, device=None, dtype=torch.float32) -> Tensor:
    """(1, size, size) weights: 1 in the middle, falling smoothly (raised cosine) to 0 at the edge
    over `feather` x size pixels."""
    position = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size
    to_edge = torch.minimum(position, 1 - position)
    ramp = torch.clamp(to_edge / max(feather, 1e-6), 0, 1)
    ramp = 0.5 - 0.5 * torch.cos(math.pi * ramp)
    return (ramp[:, None] * ramp[None, :])[None]


def working_crops(image: Tensor, boxes: Tensor, landmarks: Tensor, *, margin: float, working_size: int,
                  feather: float) -> tuple[list[CropWindow], Tensor, Tensor, Tensor]:
    """Every face's working crop, in one batch.

    image (3, H, W); boxes (F, 4) and landmarks (F, 5, 2) in photo pixels. Returns the windows,
    crops (F, 3, S, S), landmarks in working pixels (F, 5, 2), and masks (F, 1, S, S): feathering
    times validity, the weight with which a change on the working crop reaches the photo.
    """
    windows, crops, masks = [], [], []
    size = (working_size, working_size)
    feathering = feather_mask(working_size, feather, image.device, image.dtype)
    for box in boxes:
        window = crop_window(box, margin)
        crop, valid = extract(image, window)
        windows.append(window)
        crops.append(resize(crop[None], size)[0])
        masks.append(feathering * (resize(valid[None], size)[0] > 0.999).to(image.dtype))
    points = torch.stack([w.to_working(p, working_size) for w, p in zip(windows, landmarks)])
    return windows, torch.stack(crops), points, torch.stack(masks)


def widths_in_crops(boxes: Tensor, windows: list[CropWindow], working_size: int) -> Tensor:
    """Each face box's width (F,) in its working crop's pixels; boxes (F, 4) in photo pixels."""
    scale = boxes.new_tensor([working_size / w.side for w in windows])
    return (boxes[:, 2] - boxes[:, 0]) * scale


def apply_changes(image: Tensor, windows: list[CropWindow], changes: Tensor) -> Tensor:
    """The photo (3, H, W) with each working-crop change (F, 3, S, S), already masked, resized to
    its window and added; clamped to [0, 1]. Overlapping faces' changes add up."""
    _, height, width = image.shape
    out = image.clone()
    for window, change in zip(windows, changes):
        rows, cols, win_rows, win_cols = _overlap(window, height, width)
        full = resize(change[None], (window.side, window.side))[0]
        out[:, rows, cols] += full[:, win_rows, win_cols]
    return out.clamp_(0.0, 1.0)
