"""Where a face may move under the geometry carrier, and where it must hold still.

People comparing two photos read eye shape, brow height and the face's outline first; a nose a
pixel narrower, a mouth a pixel lower or a cheek contour moved inside the outline they rarely
notice. `mobility` turns the parts of one face into a weight map over its working crop: 1 where
the warp may move the face by its whole budget (nose, mouth, cheeks inside the outline), 0 where
it must not (eyes, brows, the outline itself and everything outside it), smooth in between so the
warped face has no seams.

The parts come as soft masks (`FaceParts`). Today they are estimated from MTCNN's five points
(`five_point_parts`: ellipses of typical proportions around each eye and brow, and an ellipse for
the face's inside). A face mesh gives the parts' real outlines: a function that fills its eye,
brow and face-oval regions into the same `FaceParts` (dilated and softened by the caller's
choice) replaces `five_point_parts` without any other change; `mobility` and the warp stay.

Coordinates: working-crop pixels, x right, y down, (0, 0) the top-left pixel's corner; masks
(N, 1, S, S) in [0, 1]; landmarks (N, 5, 2) in faces.detect.LANDMARK_NAMES order; face widths
(N,) in working-crop pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Typical proportions of a face, as shares of the face (detector box) width, in a frame along
# the eye line: u to the face's right in the photo, v down.
#: Half width and half height of the held region around each eye landmark (a whole eye is about
#: 0.2 wide): the eye's shape and its corners stay where they are.
EYE_AXES = (0.14, 0.09)
#: A brow's centre above its eye's landmark, and the held region's half width and half height (wide
#: enough that the two meet between the brows: no frown lines).
BROW_RAISE = 0.12
BROW_AXES = (0.22, 0.08)
#: The face's inside: an ellipse half the face wide, centred between the eyes and the mouth,
#: reaching from the forehead to the chin (multiples of the eye-to-mouth height).
FACE_HALF_WIDTH = 0.5
FACE_CENTRE_DOWN = 0.5
FACE_HALF_HEIGHT = 1.4
#: Held parts fade out from their ellipse's edge (radius 1) to this radius.
HELD_FADE_TO = 1.6
#: The inside of the face moves freely up to this share of the face ellipse's radius and holds
#: still from this one on: the outline (radius 1) never moves.
INSIDE_FREE_UP_TO = 0.6
INSIDE_HELD_FROM = 0.85


@dataclass(frozen=True)
class FaceParts:
    """Soft masks (N, 1, S, S) in [0, 1] of one face per crop: `inside`, 1 well inside the face's
    outline falling to 0 before it; `eyes` and `brows`, 1 on the parts (both sides) and a margin
    round them."""

    inside: Tensor
    eyes: Tensor
    brows: Tensor


def mobility(parts: FaceParts, mask: Tensor | None = None) -> Tensor:
    """How much of the warp's budget each pixel may move by, (N, 1, S, S) in [0, 1]: the face's
    inside, less its eyes and brows, times `mask` (the crop's feathering) when given."""
    weight = parts.inside * (1 - parts.eyes) * (1 - parts.brows)
    return weight if mask is None else weight * mask


def _smoothstep(x: Tensor, start: float, end: float) -> Tensor:
    """0 at or below `start`, 1 at or above `end`, a smooth cubic in between."""
    t = ((x - start) / (end - start)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _radius(grid: Tensor, centre: Tensor, axis_u: Tensor, axes: tuple[Tensor, Tensor]) -> Tensor:
    """Elliptical radius (N, S, S) of every pixel centre: 1 on the ellipse at `centre` (N, 2)
    with half axes `axes` (N,) each along unit `axis_u` (N, 2) and its perpendicular."""
    offset = grid[None] - centre[:, None, None, :]
    axis_v = torch.stack([-axis_u[:, 1], axis_u[:, 0]], dim=-1)
    u = (offset * axis_u[:, None, None, :]).sum(-1) / axes[0][:, None, None]
    v = (offset * axis_v[:, None, None, :]).sum(-1) / axes[1][:, None, None]
    return torch.sqrt(u * u + v * v)


def five_point_parts(landmarks: Tensor, face_widths: Tensor, size: int) -> FaceParts:
    """The parts of each face in its (size x size) working crop, estimated from its five points
    and its width: typical proportions (this module's constants) in the frame of its eye line."""
    landmarks = landmarks.to(torch.float32)
    widths = face_widths.to(landmarks)
    left_eye, right_eye, _, mouth_left, mouth_right = landmarks.unbind(1)
    eye_line = right_eye - left_eye
    axis_u = eye_line / eye_line.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    axis_v = torch.stack([-axis_u[:, 1], axis_u[:, 0]], dim=-1)           # down the face
    eye_mid, mouth_mid = (left_eye + right_eye) / 2, (mouth_left + mouth_right) / 2
    eye_to_mouth = ((mouth_mid - eye_mid) * axis_v).sum(-1).clamp_min(1e-3)

    centres = torch.arange(size, device=landmarks.device, dtype=landmarks.dtype) + 0.5
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1)    # (S, S, (x, y))

    def held(centre: Tensor, axes: tuple[float, float]) -> Tensor:
        radius = _radius(grid, centre, axis_u, (axes[0] * widths, axes[1] * widths))
        return 1 - _smoothstep(radius, 1.0, HELD_FADE_TO)

    def both(axes: tuple[float, float], raise_by: float) -> Tensor:
        lift = axis_v * (raise_by * widths)[:, None]
        return torch.maximum(held(left_eye - lift, axes), held(right_eye - lift, axes))[:, None]

    face_centre = eye_mid + axis_v * (FACE_CENTRE_DOWN * eye_to_mouth)[:, None]
    face_radius = _radius(grid, face_centre, axis_u, (FACE_HALF_WIDTH * widths, FACE_HALF_HEIGHT * eye_to_mouth))
    inside = 1 - _smoothstep(face_radius, INSIDE_FREE_UP_TO, INSIDE_HELD_FROM)
    return FaceParts(inside=inside[:, None], eyes=both(EYE_AXES, 0.0), brows=both(BROW_AXES, BROW_RAISE))
