"""The attack's budget: how large a change each pixel may carry, and in which colours.

SSIM alone lets an attack shift skin tone and mottle smooth skin: the eye sees colour (chroma)
changes and low-texture changes long before SSIM does. Two knobs shape the change:

- `colour="luma"`: one change per pixel added equally to R, G and B. It moves lightness and
  leaves chroma (CIELAB a*, b*) nearly where it was, so no tinted blotches; face recognizers are
  driven by luminance structure and keep almost all of their sensitivity. `"rgb"` lets each
  channel move on its own (the paper's attack).
- `texture_floor` < 1: the per-pixel L-infinity budget follows local contrast. A pixel in a flat
  area (smooth skin, sky) may change by `texture_floor * epsilon`; one in texture (hair, brows,
  eyes, edges) by up to `epsilon`. Local contrast = the Gaussian-weighted standard deviation of
  luma around the pixel; at `texture_reference` or more the full budget applies.
- `delta_e_cap`: a budget in the eye's units. With `colour="luma"` each pixel may get lighter or
  darker only as far as its CIEDE2000 difference from the clean pixel stays under the cap: a fixed
  number of 8-bit levels is a large step in dark hair and a small one on bright skin. The limits
  are measured on the clean crop (the ΔE2000 of a probe step, scaled linearly to the cap). With
  `colour="rgb"` the change may also move chroma, and each pixel's change is scaled back onto the
  ΔE2000 ball after every step (`project`): the same visible budget, more directions to spend it.

- a budget *map* (`scale`, e.g. the just-noticeable-difference map of jnd.py): every pixel's
  limits, and its ΔE2000 cap, multiplied by a per-pixel factor (N, 1, S, S); None = uniform.
- a face's *size* (`face_size_factors`): the change is made at the working crop's resolution
  (about 128 px a face) and enlarged onto the photo, so on a 400 px face its patches are three
  times larger, at the spatial frequencies the eye sees best. Faces wider than a reference get a
  smaller budget, as a factor multiplied into the map.

Images are NCHW RGB in [0, 1]; a change is (N, 1, S, S) for luma and (N, 3, S, S) for RGB,
in [0, 1] pixel units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .colour import delta_e2000
from .transforms import gaussian_blur

#: Rec. 601 luma weights (R, G, B).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: Window of the local-contrast estimate: Gaussian kernel size and sigma, working-crop pixels.
CONTRAST_KERNEL = 7
CONTRAST_SIGMA = 2.0
COLOUR_SPACES = ("rgb", "luma")
#: Lightness step whose measured ΔE2000 sets the per-pixel `delta_e_cap` limits (linear scaling).
DELTA_E_PROBE = 8 / 255
#: Passes of scaling an RGB change onto the ΔE2000 ball (ΔE2000 is only nearly linear in it).
DELTA_E_BALL_PASSES = 2


def luma(images: Tensor) -> Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) Rec. 601 luma, same range."""
    weights = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def local_contrast(images: Tensor) -> Tensor:
    """(N, 1, H, W): standard deviation of luma in a Gaussian window around each pixel."""
    y = luma(images)
    mean = gaussian_blur(y, CONTRAST_KERNEL, CONTRAST_SIGMA)
    square = gaussian_blur(y * y, CONTRAST_KERNEL, CONTRAST_SIGMA)
    return (square - mean * mean).clamp_min(0).sqrt()


@dataclass(frozen=True)
class PerceptualBudget:
    """Per-pixel limits on the change. `epsilon` None = no L-infinity limit (only [0, 1])."""

    epsilon: float | None
    colour: str = "rgb"
    texture_floor: float = 1.0
    texture_reference: float = 0.04
    delta_e_cap: float | None = None

    def __post_init__(self):
        if self.colour not in COLOUR_SPACES:
            raise ValueError(f"colour must be one of {', '.join(COLOUR_SPACES)}, got {self.colour!r}")
        if not 0.0 <= self.texture_floor <= 1.0:
            raise ValueError(f"texture_floor must be in [0, 1], got {self.texture_floor}")
        if self.texture_reference <= 0:
            raise ValueError(f"texture_reference must be > 0, got {self.texture_reference}")
        if self.delta_e_cap is not None and self.delta_e_cap <= 0:
            raise ValueError(f"delta_e_cap must be > 0 or None, got {self.delta_e_cap}")

    @property
    def channels(self) -> int:
        return 1 if self.colour == "luma" else 3

    def limits(self, crops: Tensor, scale: Tensor | None = None) -> tuple[Tensor, Tensor] | None:
        """Largest darkening and lightening per pixel for these clean crops, (N, 1, S, S) each,
        as magnitudes in [0, 1] pixel units, times the budget map `scale` (N, 1, S, S) when one is
        given; None = unlimited (a map then has nothing to scale: ValueError)."""
        if self.epsilon is None and self.delta_e_cap is None:
            if scale is not None:
                raise ValueError("a budget map needs a budget to scale: set epsilon or delta_e_cap")
            return None
        darker, lighter = self._uniform_limits(crops)
        if scale is None:
            return darker, lighter
        return darker * scale, lighter * scale

    def _uniform_limits(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        size = (crops.shape[0], 1, *crops.shape[-2:])
        limit = crops.new_full(size, float("inf") if self.epsilon is None else self.epsilon)
        if self.texture_floor < 1.0:
            texture = (local_contrast(crops) / self.texture_reference).clamp(0, 1)
            limit = limit * (self.texture_floor + (1 - self.texture_floor) * texture)
        if self.delta_e_cap is None or self.colour == "rgb":    # rgb: the cap is a ball (project)
            return limit, limit
        darker, lighter = (self.delta_e_cap * DELTA_E_PROBE
                           / delta_e2000(crops, (crops + sign * DELTA_E_PROBE).clamp(0, 1)).clamp_min(1e-3)
                           for sign in (-1, 1))
        return (torch.minimum(limit, darker[:, None].to(crops.dtype)),
                torch.minimum(limit, lighter[:, None].to(crops.dtype)))

    def to_rgb(self, change: Tensor) -> Tensor:
        """A change in this budget's colour space -> (N, 3, S, S) RGB."""
        return change.expand(-1, 3, -1, -1) if change.shape[1] == 1 else change

    def project(self, change: Tensor, crops: Tensor, mask: Tensor,
                limits: tuple[Tensor, Tensor] | None, scale: Tensor | None = None) -> Tensor:
        """The nearest change (per pixel) such that crops + mask * change stays in [0, 1] in every
        channel and -darker <= change <= lighter (`limits`, already scaled by the budget map).
        mask (N, 1, S, S) in [0, 1]; `scale` (N, 1, S, S) is the budget map, which also scales the
        ΔE2000 ball of an RGB change."""
        weight = mask.clamp_min(1e-6)
        lowest = (-crops / weight)                 # change >= this keeps every channel >= 0
        highest = (1 - crops) / weight             # change <= this keeps every channel <= 1
        if self.channels == 1:
            lowest = lowest.amax(1, keepdim=True)
            highest = highest.amin(1, keepdim=True)
        if limits is not None:
            darker, lighter = limits
            lowest, highest = torch.maximum(lowest, -darker), torch.minimum(highest, lighter)
        change = torch.maximum(torch.minimum(change, highest), lowest)
        change = torch.where(mask > 0, change, torch.zeros_like(change))
        if self.delta_e_cap is not None and self.channels == 3:
            change = self._onto_delta_e_ball(change, crops, mask, scale)
        return change

    def _onto_delta_e_ball(self, change: Tensor, crops: Tensor, mask: Tensor,
                           scale: Tensor | None = None) -> Tensor:
        """Each pixel's RGB change scaled down (never up) so that its CIEDE2000 from the clean
        pixel is at most the cap (times the budget map); ΔE2000 is nearly linear in a small
        change, and a second pass catches the rest. Scaling towards zero keeps the [0, 1] range."""
        cap = self.delta_e_cap if scale is None else self.delta_e_cap * scale
        for _ in range(DELTA_E_BALL_PASSES):
            difference = delta_e2000(crops, crops + mask * change).to(change.dtype)[:, None]
            change = change * (cap / difference.clamp_min(1e-6)).clamp(max=1.0)
        return change


def face_size_factors(face_widths_px: Tensor, full_budget_face_px: float | None, exponent: float) -> Tensor | None:
    """(N,) each face's budget factor in (0, 1]: 1 for a face up to `full_budget_face_px` wide
    (photo pixels), (full_budget_face_px / width) ** exponent for a wider one. None when
    `full_budget_face_px` is None or no face is wider (every face gets the whole budget)."""
    if full_budget_face_px is None:
        return None
    if full_budget_face_px <= 0 or exponent < 0:
        raise ValueError(f"full_budget_face_px must be > 0 and the exponent >= 0, got "
                         f"{full_budget_face_px} and {exponent}")
    if not bool((face_widths_px > full_budget_face_px).any()):
        return None
    return (full_budget_face_px / face_widths_px.clamp(min=full_budget_face_px)) ** exponent
