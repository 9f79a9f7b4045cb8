"""A just-noticeable-difference map: how much of the budget each pixel of a working crop may use.

    maps, meshed = face_budget_maps(photo, faces, windows, working_size, mesh.fit(photo, faces))
    change = attack(crops, landmarks, masks, budget_scale=maps)      # maps: (F, 1, S, S)

The per-pixel budget (budget.py: epsilon and the ΔE2000 cap) is multiplied by this map, computed
from the photo's own full-resolution pixels of the face's crop window and the face mesh:

1. contrast masking: a change hides in texture that is already there. The texture is the local
   standard deviation of luma at the photo's full resolution (Gaussian window of TEXTURE_SIGMA
   working pixels), so the fine texture of hair, brows, beard and the jaw edge counts even where
   the working crop (a 400 px face is worked on at 128 px) has smoothed it away; then the map is
   area-averaged down to the working crop;
2. luminance masking: the eye is less sensitive to a change on dark or bright backgrounds than on
   mid-tones (Chou and Li 1995: the visibility threshold against the local mean luma);
3. the two combine as in the nonlinear additive masking model (NAMM, Yang et al. 2005):
   T = T_lum + T_tex - NAMM_OVERLAP * min(T_lum, T_tex), in 8-bit levels;
4. region weights from the mesh (regions.py, REGION_WEIGHTS): the whites of the eyes, the lip
   edges, the zone between the brows (frown lines) and under the eyes (tiredness) get a small share
   however textured they are; flat skin gets what its texture earns;
5. normalisation (JND_NORMALISATIONS), inside the face region (its MTCNN box in the crop):
   - "p95" (the default): the map's 95th percentile over the face is 1, so the budget's
     largest common allowance is today's ΔE2000 cap and the measured face ΔE2000 p95 stays
     comparable with the uniform budget; the mean allowance is lower (flat skin gets less);
   - "mean": the map's mean over the face is 1 (the same total allowance, moved from flat skin to
     texture; peaks go above the cap, so ΔE2000 p95 rises);
   either way capped at MAX_SCALE.
Images are (3, H, W) RGB in [0, 1]; the map is (1, S, S) in [0, MAX_SCALE].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..faces.detect import Face
from ..faces.mesh import MeshFit
from .budget import luma
from .crops import CropWindow, extract
from .regions import region_masks
from .transforms import gaussian_blur

#: ProtectSettings.budget_map values: the uniform budget; this module's map; or its region weights
#: alone (`regions`: the eyes, lip edges, the zone between the brows and under the eyes get their
#: small share of the budget, every other pixel all of it, no masking and no normalisation).
BUDGET_MAPS = ("uniform", "jnd", "regions")
JND_NORMALISATIONS = ("p95", "mean")
#: Texture window (Gaussian sigma), working-crop pixels: about one patch of the change's scale.
TEXTURE_SIGMA = 1.5
#: Chou and Li's luminance threshold, 8-bit levels: T = DARK_GAIN * (1 - sqrt(bg / MID)) + FLOOR
#: below the mid level, FLOOR + BRIGHT_SLOPE * (bg - MID) above it.
LUMINANCE_MID = 127.0
LUMINANCE_DARK_GAIN = 17.0
LUMINANCE_BRIGHT_SLOPE = 3.0 / 128.0
LUMINANCE_FLOOR = 3.0
#: Texture threshold per unit of local luma std (both 8-bit levels).
TEXTURE_GAIN = 0.6
#: NAMM's overlap of the two maskings (0: they add; 1: only the larger counts).
NAMM_OVERLAP = 0.3
#: Share of the map kept in each region (soft masks; where regions overlap the smallest wins).
REGION_WEIGHTS = {
    "eyes": 0.25,
    "lip_edge": 0.3,
    "brow_furrow": 0.2,
    "under_eyes": 0.25,
    "lips": 0.6,
}
#: The map's percentile set to 1 by the "p95" normalisation, and the map's ceiling.
NORMALISE_QUANTILE = 0.95
MAX_SCALE = 1.5
LEVELS = 255.0


def luminance_threshold(background: Tensor) -> Tensor:
    """Chou-Li visibility threshold (8-bit levels) against a local mean luma in 8-bit levels."""
    dark = LUMINANCE_DARK_GAIN * (1 - (background / LUMINANCE_MID).clamp_min(0).sqrt()) + LUMINANCE_FLOOR
    bright = LUMINANCE_BRIGHT_SLOPE * (background - LUMINANCE_MID) + LUMINANCE_FLOOR
    return torch.where(background <= LUMINANCE_MID, dark, bright)


def masking_threshold(window: Tensor, working_size: int) -> Tensor:
    """(1, S, S) NAMM visibility threshold, 8-bit levels, of the full-resolution crop window
    (3, side, side), computed at full resolution and area-averaged to S = working_size."""
    side = window.shape[-1]
    sigma = TEXTURE_SIGMA * side / working_size
    kernel = 2 * int(3 * sigma) + 1
    y = luma(window[None]) * LEVELS
    mean = gaussian_blur(y, kernel, sigma)
    texture = (gaussian_blur(y * y, kernel, sigma) - mean * mean).clamp_min(0).sqrt()
    texture_threshold = TEXTURE_GAIN * texture
    luminance = luminance_threshold(mean)
    threshold = luminance + texture_threshold - NAMM_OVERLAP * torch.minimum(luminance, texture_threshold)
    return F.interpolate(threshold, size=(working_size, working_size), mode="area")[0]


def region_weight(masks: dict[str, Tensor]) -> Tensor:
    """(1, S, S): each pixel's share by REGION_WEIGHTS, 1 outside the weighted regions."""
    weight = torch.ones_like(next(iter(masks.values())))
    for name, share in REGION_WEIGHTS.items():
        weight = torch.minimum(weight, 1 - masks[name] * (1 - share))
    return weight


def normalise(raw: Tensor, face_region: Tensor, how: str) -> Tensor:
    """`raw` (1, S, S) scaled so that its 95th percentile ("p95") or mean ("mean") inside the
    face region (1, S, S, > 0.5 counts) is 1, then capped at MAX_SCALE."""
    if how not in JND_NORMALISATIONS:
        raise ValueError(f"JND normalisation must be one of {', '.join(JND_NORMALISATIONS)}, got {how!r}")
    inside = raw[face_region > 0.5]
    if inside.numel() == 0:
        raise ValueError("the face region covers no pixel of the crop")
    reference = torch.quantile(inside.float(), NORMALISE_QUANTILE) if how == "p95" else inside.mean()
    scale = raw / reference.clamp_min(1e-6)
    if how == "mean":       # capping lowers the mean: rescale the uncapped part until it holds
        for _ in range(4):
            capped = scale.clamp(max=MAX_SCALE)
            scale = scale * (1 / capped[face_region > 0.5].mean().clamp_min(1e-6))
    return scale.clamp(0, MAX_SCALE)


def jnd_scale(window: Tensor, points: Tensor, working_size: int, face_region: Tensor,
              how: str = "p95") -> Tensor:
    """(1, S, S) budget scale for one face's working crop.

    window: (3, side, side) the crop window's full-resolution photo pixels in [0, 1];
    points: (468, 2 or 3) the face mesh in working-crop pixels; face_region: (1, S, S) in [0, 1]
    where the face is (the normalisation's reference area), S = working_size."""
    masks = region_masks(points, (working_size, working_size))
    raw = masking_threshold(window, working_size).to(points.device) * region_weight(masks)
    return normalise(raw, face_region.to(raw.device), how)


#: The full-resolution window is area-reduced to at most this many times the working crop's side
#: before its texture is measured (a 1000 px face: texture at 4x the working crop's detail).
MAX_DETAIL = 4


def face_budget_maps(photo: Tensor, faces: Sequence[Face], windows: Sequence[CropWindow], working_size: int,
                     fits: Sequence[MeshFit | None], how: str = "p95", kind: str = "jnd"
                     ) -> tuple[Tensor, list[bool]]:
    """The budget maps of every face's working crop, (F, 1, S, S), and which faces got one.

    photo (3, H, W) in [0, 1]; faces, their crop windows (crops.working_crops) and mesh fits
    (faces.mesh.FaceMesh.fit), one each; kind "jnd" (the whole map, normalised `how`) or
    "regions" (region_weight alone). A face without a mesh fit (None) gets the uniform map (all
    ones): today's budget, reported as False."""
    if kind not in BUDGET_MAPS[1:]:
        raise ValueError(f"a budget map is one of {', '.join(BUDGET_MAPS[1:])}, got {kind!r}")
    maps, meshed = [], []
    for face, window, fit in zip(faces, windows, fits):
        if fit is None:
            maps.append(photo.new_ones(1, working_size, working_size))
            meshed.append(False)
            continue
        points = window.to_working(fit.xy.to(photo.device), working_size)
        meshed.append(True)
        if kind == "regions":
            maps.append(region_weight(region_masks(points, (working_size, working_size))))
            continue
        pixels, _ = extract(photo, window)
        detail = min(window.side, MAX_DETAIL * working_size)
        if detail < window.side:
            pixels = F.interpolate(pixels[None], size=(detail, detail), mode="area")[0]
        box = window.to_working(photo.new_tensor(face.box).view(2, 2), working_size)
        maps.append(jnd_scale(pixels, points, working_size, box_mask(box, working_size), how))
    return torch.stack(maps), meshed


def box_mask(corners: Tensor, size: int) -> Tensor:
    """(1, size, size) {0, 1}: pixel centres inside the box corners (2, 2) = ((x1, y1), (x2, y2))."""
    centres = torch.arange(size, device=corners.device, dtype=corners.dtype) + 0.5
    cols = (centres >= corners[0, 0]) & (centres < corners[1, 0])
    rows = (centres >= corners[0, 1]) & (centres < corners[1, 1])
    return (rows[:, None] & cols[None, :]).to(corners.dtype)[None]
