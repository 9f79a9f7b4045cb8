"""Soft masks of a face's regions on a crop, drawn from its face mesh (faces/mesh.py).

    masks = region_masks(points, size=(S, S))     # points: (468, 2) mesh x, y in this crop's pixels
    masks["skin"]                                 # (1, S, S) in [0, 1]

Each region is a polygon of mesh points (the mesh's published contours, or the convex hull of a
point set), filled at pixel centres, widened or narrowed by a share of the face's width where a
bare outline would miss the part's rim, then softened with a Gaussian of SOFTNESS x face width, so
a mask fades over a few pixels instead of cutting. Regions (REGION_NAMES):

- oval:          inside the face outline (forehead top to chin, cheek to cheek);
- eyes:          both eye openings with their lid margins (whites, irises and lashes);
- brows:         both eyebrows;
- lips:          inside the lips' outer outline;
- lip_edge:      a band along the lips' outer outline (the vermilion border);
- nose:          the nose (bridge, tip and wings);
- brow_furrow:   the zone between the brows above the nose bridge (where frown lines form);
- under_eyes:    the lower lids and the band below them (where tiredness shows);
- skin:          the oval less eyes, brows and lips;
- outer_band:    a band just outside the oval (hairline, temples, jaw edge, under the chin);
- hairline:      the outer band's part above the eyes.

The masks overlap where the anatomy does (nose and brow_furrow are skin too); eyes, brows and lips
are disjoint from each other. Crops are NCHW-like (1, H, W) float masks; points are continuous
pixel coordinates ((0, 0) the top-left corner of the top-left pixel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..faces.mesh import (
    BETWEEN_BROWS,
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE,
    LIPS_OUTER,
    NOSE,
    NOSE_BRIDGE_TOP,
    OUTER_EYE_CORNERS,
    RIGHT_BROW,
    RIGHT_EYE,
)
from .transforms import gaussian_blur

REGION_NAMES = ("oval", "eyes", "brows", "lips", "lip_edge", "nose", "brow_furrow", "under_eyes", "skin",
                "outer_band", "hairline")
#: Gaussian softening of every mask, share of the face's width (sigma).
SOFTNESS = 0.012
#: Widening of the eye openings (lashes, lid margins) and brows (stray hairs), share of face width.
EYE_GROW = 0.02
BROW_GROW = 0.015
#: Half-width of the lip-edge band, share of face width.
LIP_EDGE_HALF_WIDTH = 0.02
#: Width of the band outside the oval, share of face width.
OUTER_BAND_WIDTH = 0.12
#: The under-eye zone reaches this many eye widths below the lower lid.
UNDER_EYE_DEPTH = 0.45
#: The brow-furrow zone reaches from the nose bridge's top this many times the bridge-to-brows
#: distance upwards (frown lines run up the lower forehead).
BROW_FURROW_HEIGHT = 2.0
#: Lower-lid points of each eye opening (outer corner to inner corner), as indices into the
#: LEFT_EYE / RIGHT_EYE loops: their first nine points.
LOWER_LID_POINTS = 9
#: Inner ends of the brows (lower and upper edge), into LEFT_BROW / RIGHT_BROW.
INNER_BROW_POINTS = (4, 5)


def polygon_mask(vertices: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) float {0, 1}: pixels whose centre lies inside the closed polygon `vertices` (K, 2)
    (x, y in pixels), by the even-odd rule: along each row of pixel centres, every edge crossing
    toggles inside/outside from the first pixel centre right of it."""
    height, width = size
    start = vertices.float()
    end = torch.roll(start, -1, dims=0)
    y = (torch.arange(height, dtype=torch.float32) + 0.5)[:, None]             # (H, 1) against (1, K)
    y0, y1, x0, x1 = start[None, :, 1], end[None, :, 1], start[None, :, 0], end[None, :, 0]
    crosses = (y0 > y) != (y1 > y)                                            # (H, K)
    at = x0 + (y - y0) * (x1 - x0) / torch.where(y1 == y0, torch.ones_like(y1), y1 - y0)
    first_right = torch.ceil(at - 0.5).clamp(0, width).long()                 # first centre x > at
    toggles = torch.zeros(height, width + 1)
    toggles.scatter_add_(1, torch.where(crosses, first_right, width), crosses.float())
    return (toggles.cumsum(1)[:, :width] % 2).float()


def convex_hull(points: Tensor) -> Tensor:
    """(K', 2) the convex hull of points (K, 2), counter-clockwise (Andrew's monotone chain)."""
    ordered = sorted(set(map(tuple, points.tolist())))
    if len(ordered) < 3:
        return points

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def chain(sequence):
        hull: list[tuple[float, float]] = []
        for p in sequence:
            while len(hull) >= 2 and cross(hull[-2], hull[-1], p) <= 0:
                hull.pop()
            hull.append(p)
        return hull[:-1]

    return points.new_tensor(chain(ordered) + chain(ordered[::-1]))


def grow(mask: Tensor, pixels: float) -> Tensor:
    """(H, W) {0, 1} mask dilated (pixels > 0) or eroded (< 0) by a square of that half-side
    (the masks are softened afterwards, so the square's corners do not show)."""
    radius = round(abs(pixels))
    if radius == 0:
        return mask
    source = mask if pixels > 0 else 1 - mask
    side = 2 * radius + 1                                       # a square is two 1-D passes
    hits = F.max_pool2d(source[None, None], (side, 1), stride=1, padding=(radius, 0))
    hits = F.max_pool2d(hits, (1, side), stride=1, padding=(0, radius))[0, 0]
    return hits if pixels > 0 else 1 - hits


def face_width(points: Tensor) -> float:
    """The face oval's width (pixels): its horizontal extent in the eye-level frame."""
    oval = points[list(FACE_OVAL)]
    direction = _unit(points[OUTER_EYE_CORNERS[1]] - points[OUTER_EYE_CORNERS[0]])
    along = oval @ direction
    return float(along.max() - along.min())


def _unit(vector: Tensor) -> Tensor:
    return vector / vector.norm().clamp_min(1e-6)


def _down(points: Tensor) -> Tensor:
    """Unit vector pointing down the face: the eye line turned a quarter (y grows downwards)."""
    across = _unit(points[OUTER_EYE_CORNERS[1]] - points[OUTER_EYE_CORNERS[0]])
    return torch.stack([-across[1], across[0]])


def _under_eye(points: Tensor, eye: tuple[int, ...]) -> Tensor:
    """Hull of an eye's lower lid and the same lid moved UNDER_EYE_DEPTH eye widths down."""
    lid = points[list(eye[:LOWER_LID_POINTS])]
    eye_width = float((lid[0] - lid[-1]).norm())
    return convex_hull(torch.cat([lid, lid + UNDER_EYE_DEPTH * eye_width * _down(points)]))


def _brow_furrow(points: Tensor) -> Tensor:
    """Hull of the brows' inner ends and the nose bridge's top, stretched up the forehead."""
    inner = [points[list(brow)][list(INNER_BROW_POINTS)] for brow in (LEFT_BROW, RIGHT_BROW)]
    bridge, between = points[NOSE_BRIDGE_TOP], points[BETWEEN_BROWS]
    rise = -_down(points) * float((between - bridge).norm()) * BROW_FURROW_HEIGHT
    corners = torch.cat(inner + [bridge[None]])
    return convex_hull(torch.cat([corners, corners + rise]))


def region_masks(points: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
    """Every region of REGION_NAMES as a soft (1, H, W) mask in [0, 1] on a crop of `size`
    (H, W), from the mesh points (468, 2 or 3) in that crop's pixels."""
    xy = points[:, :2].float().cpu()
    width = face_width(xy)

    def fill(vertices: Tensor, grow_by: float = 0.0) -> Tensor:
        return grow(polygon_mask(vertices, size), grow_by * width)

    def contour(indices: tuple[int, ...], grow_by: float = 0.0) -> Tensor:
        return fill(xy[list(indices)], grow_by)

    oval = contour(FACE_OVAL)
    eyes = torch.maximum(contour(LEFT_EYE, EYE_GROW), contour(RIGHT_EYE, EYE_GROW))
    brows = torch.maximum(contour(LEFT_BROW, BROW_GROW), contour(RIGHT_BROW, BROW_GROW)) * (1 - eyes)
    lips = contour(LIPS_OUTER)
    lip_edge = grow(lips, LIP_EDGE_HALF_WIDTH * width) - grow(lips, -LIP_EDGE_HALF_WIDTH * width)
    under_eyes = torch.maximum(fill(_under_eye(xy, LEFT_EYE)), fill(_under_eye(xy, RIGHT_EYE))) * (1 - eyes)
    outer_band = grow(oval, OUTER_BAND_WIDTH * width) * (1 - oval)
    eye_level = float((xy[list(LEFT_EYE + RIGHT_EYE)] @ _down(xy)).mean())
    rows = torch.arange(size[0], dtype=torch.float32)[:, None] + 0.5
    cols = torch.arange(size[1], dtype=torch.float32)[None, :] + 0.5
    down = _down(xy)
    above_eyes = ((cols * down[0] + rows * down[1]) < eye_level).float()
    hard = {
        "oval": oval,
        "eyes": eyes,
        "brows": brows,
        "lips": lips,
        "lip_edge": lip_edge,
        "nose": fill(convex_hull(xy[list(NOSE)])),
        "brow_furrow": fill(_brow_furrow(xy)) * (1 - brows) * (1 - eyes),
        "under_eyes": under_eyes,
        "skin": (oval - torch.maximum(torch.maximum(eyes, brows), lips)).clamp(0, 1),
        "outer_band": outer_band,
        "hairline": outer_band * above_eyes,
    }
    sigma = max(SOFTNESS * width, 0.5)
    kernel = 2 * int(3 * sigma) + 1
    stacked = torch.stack([hard[name] for name in REGION_NAMES])[:, None]
    soft = gaussian_blur(stacked, kernel, sigma) if kernel < min(size) else stacked
    return {name: soft[i].clamp(0, 1).to(points.device) for i, name in enumerate(REGION_NAMES)}
