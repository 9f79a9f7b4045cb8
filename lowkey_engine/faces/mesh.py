"""The face mesh: MediaPipe FaceMesh's 468 points on a face MTCNN found, in photo pixels.

    mesh = load_face_mesh("cpu")                 # loaded once, cached, eval(), no grad on weights
    fits = mesh.fit(photo, faces)                # one MeshFit (or None: no mesh fit) per Face
    fits[0].points                               # (468, 3): x, y in photo pixels, z relative depth
    fits[0].group("mouth")                       # (K, 2): the points of one named part

The model (MediaPipe's `face_landmark.tflite`, converted to a GraphNet graph by the fetch step)
takes a 192x192 RGB crop with pixels in [0, 1] and gives 468 (x, y, z) points in that crop's
pixels plus a face-presence logit. The crop is MediaPipe's region of interest: a square 1.5 times
the face's size, centred on the face and rotated so the eyes are level. MediaPipe derives it from
its own detector's box and eyes; here the first crop comes from MTCNN's box and eyes, and a second
from the first fit's own points (MediaPipe's tracking rule: the points' bounding square in the
eye-level frame, the angle from outer eye corner to outer eye corner), which centres the face as
the model was trained to see it. A fit whose face score is below FACE_SCORE_THRESHOLD, or whose
eyes land far from MTCNN's, is reported as no fit (None) and the caller falls back.

Coordinates are continuous photo pixels as the detector gives them ((0, 0) is the top-left corner
of the top-left pixel; x right, y down). Photos are RGB (3, H, W) in [0, 1].

Named parts (`PART_POINTS`, from the mesh's published topology; "left"/"right" are as seen in the
image, like MTCNN's landmark names: the image-left eye is the person's right eye):
face_oval, left_eye, right_eye, left_brow, right_brow, lips_outer, lips_inner, nose, and the
combined groups eyes, brows, mouth (= lips_outer), jaw (the oval's lower half).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .align import warp_faces
from .detect import LANDMARK_NAMES, Face
from .nets import load_net
from .paths import require_converted

MODEL_ID = "face-mesh"
#: The model's input side (pixels) and its point count; its output is 3 * POINT_COUNT coordinates
#: then one face-presence logit.
INPUT_SIZE = 192
POINT_COUNT = 468
#: MediaPipe's region of interest: this many times the face's square (box or points' extent).
ROI_SCALE = 1.5
#: Face-presence probability (sigmoid of the logit) below which a fit counts as failed (MediaPipe's).
FACE_SCORE_THRESHOLD = 0.5
#: A fit whose eye centres are further than this share of the eye distance from MTCNN's eyes is
#: treated as failed (the mesh found some other face-like thing, or none).
EYE_AGREEMENT = 0.35

# --- the mesh's published topology: contours as ordered point-index loops --------------------------
#: The face's outline, from the top of the forehead clockwise as seen in the image.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
#: Eye openings (lid margins): the image-left eye (person's right) and the image-right eye.
LEFT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
RIGHT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
#: Eyebrows: lower edge outer->inner, then upper edge inner->outer (a closed outline).
LEFT_BROW = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
RIGHT_BROW = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)
#: Lips: outer and inner outlines, from the image-left mouth corner.
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
#: Nose: the bridge and tip down the midline, then the wings and nostrils.
NOSE = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 97, 326, 327, 294, 278, 344, 440, 275, 45, 220, 115,
        48, 64)
#: Single points used below: mouth corners, outer eye corners, the top of the nose bridge, the
#: point between the brows, the chin.
MOUTH_CORNERS = (61, 291)
OUTER_EYE_CORNERS = (33, 263)
NOSE_BRIDGE_TOP = 168
BETWEEN_BROWS = 9
CHIN = 152

PART_POINTS: dict[str, tuple[int, ...]] = {
    "face_oval": FACE_OVAL,
    "left_eye": LEFT_EYE,
    "right_eye": RIGHT_EYE,
    "eyes": LEFT_EYE + RIGHT_EYE,
    "left_brow": LEFT_BROW,
    "right_brow": RIGHT_BROW,
    "brows": LEFT_BROW + RIGHT_BROW,
    "lips_outer": LIPS_OUTER,
    "lips_inner": LIPS_INNER,
    "mouth": LIPS_OUTER,
    "nose": NOSE,
    "jaw": FACE_OVAL[FACE_OVAL.index(323):FACE_OVAL.index(93) + 1],
}


@dataclass(frozen=True)
class MeshFit:
    """One face's mesh. points: (468, 3) float, x and y in photo pixels, z the model's relative
    depth scaled like x (more negative = nearer the camera). score: face presence in [0, 1]."""

    points: Tensor
    score: float

    @property
    def xy(self) -> Tensor:
        """(468, 2) x, y in photo pixels."""
        return self.points[:, :2]

    def group(self, name: str) -> Tensor:
        """(K, 2) photo-pixel points of the part `name` (a key of PART_POINTS), in contour order."""
        if name not in PART_POINTS:
            raise KeyError(f"unknown face part {name!r}; known: {', '.join(PART_POINTS)}")
        return self.xy[list(PART_POINTS[name])]

    def eye_centres(self) -> Tensor:
        """(2, 2): the centre of the image-left eye opening, then the image-right one."""
        return torch.stack([self.group("left_eye").mean(0), self.group("right_eye").mean(0)])

    @property
    def width(self) -> float:
        """The face's width in photo pixels: the face oval's horizontal extent."""
        oval = self.group("face_oval")[:, 0]
        return float(oval.max() - oval.min())


@dataclass(frozen=True)
class _Roi:
    """A rotated square of the photo: centre (x, y), side and angle (radians, the eye line's)."""

    centre: tuple[float, float]
    side: float
    angle: float

    def to_crop(self) -> Tensor:
        """(2, 3) similarity: photo coordinates -> INPUT_SIZE crop coordinates (eye line level)."""
        scale = INPUT_SIZE / self.side
        cos, sin = math.cos(self.angle) * scale, math.sin(self.angle) * scale
        cx, cy = self.centre
        half = INPUT_SIZE / 2
        # rotate by -angle about the centre, scale, move the centre to the crop's middle
        return torch.tensor([[cos, sin, half - cos * cx - sin * cy],
                             [-sin, cos, half + sin * cx - cos * cy]])

    def to_photo(self, crop_points: Tensor) -> Tensor:
        """(K, 3) crop points (x, y in crop pixels, z) -> photo pixels (z scaled the same)."""
        scale = self.side / INPUT_SIZE
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        x, y = crop_points[:, 0] - INPUT_SIZE / 2, crop_points[:, 1] - INPUT_SIZE / 2
        px = self.centre[0] + scale * (cos * x - sin * y)
        py = self.centre[1] + scale * (sin * x + cos * y)
        return torch.stack([px, py, crop_points[:, 2] * scale], dim=1)


def _roi_crop(photo: Tensor, roi: _Roi) -> Tensor:
    """(1, 3, INPUT_SIZE, INPUT_SIZE): the ROI's crop, sampled from only the part of the photo the
    rotated square can reach (zeros beyond the photo), so a big photo is not filtered whole."""
    _, height, width = photo.shape
    reach = roi.side * math.sqrt(0.5) + 2
    x0, y0 = max(0, math.floor(roi.centre[0] - reach)), max(0, math.floor(roi.centre[1] - reach))
    x1 = min(width, math.ceil(roi.centre[0] + reach))
    y1 = min(height, math.ceil(roi.centre[1] + reach))
    matrix = roi.to_crop()
    matrix[:, 2] += matrix[:, :2] @ torch.tensor([float(x0), float(y0)])   # sub-image coordinates
    part = photo[:, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    return warp_faces(part[None], matrix[None].to(photo.device), INPUT_SIZE)


def _angle(start: Tensor, end: Tensor) -> float:
    return math.atan2(float(end[1] - start[1]), float(end[0] - start[0]))


def roi_from_face(face: Face) -> _Roi:
    """MediaPipe's crop from a detection: the box's longer side x ROI_SCALE, centred on the box,
    rotated by the line from the image-left eye to the image-right eye."""
    x1, y1, x2, y2 = face.box
    points = dict(zip(LANDMARK_NAMES, face.landmarks))
    angle = _angle(torch.tensor(points["left_eye"]), torch.tensor(points["right_eye"]))
    return _Roi(((x1 + x2) / 2, (y1 + y2) / 2), ROI_SCALE * max(x2 - x1, y2 - y1), angle)


def roi_from_points(xy: Tensor) -> _Roi:
    """MediaPipe's tracking crop from a fit (468, 2): angle from outer eye corner to outer eye
    corner, the points' bounding square in that eye-level frame x ROI_SCALE."""
    angle = _angle(xy[OUTER_EYE_CORNERS[0]], xy[OUTER_EYE_CORNERS[1]])
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = xy.new_tensor([[cos, sin], [-sin, cos]])       # photo -> eye-level frame
    level = xy @ rotation.T
    low, high = level.amin(0), level.amax(0)
    centre = ((low + high) / 2) @ rotation                     # back to the photo frame
    return _Roi((float(centre[0]), float(centre[1])), ROI_SCALE * float((high - low).max()), angle)


class FaceMesh(nn.Module):
    """The converted FaceMesh graph with MediaPipe's crop rule around it (see module doc)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @classmethod
    def load(cls, path: str | Path | None = None) -> FaceMesh:
        return cls(load_net(Path(path) if path else require_converted(MODEL_ID))).eval()

    @property
    def device(self) -> torch.device:
        return next(self.net.buffers()).device

    @torch.no_grad()
    def run(self, photo: Tensor, rois: Sequence[_Roi]) -> tuple[Tensor, Tensor]:
        """The model on each ROI of `photo` (3, H, W): points (R, 468, 3) in photo pixels and face
        probabilities (R,)."""
        photo = photo.to(self.device, torch.float32)
        crops = torch.cat([_roi_crop(photo, roi) for roi in rois])
        out = self.net(crops).float().cpu()
        crop_points = out[:, :3 * POINT_COUNT].reshape(-1, POINT_COUNT, 3)
        points = torch.stack([roi.to_photo(p) for roi, p in zip(rois, crop_points)])
        return points, torch.sigmoid(out[:, 3 * POINT_COUNT])

    def fit(self, photo: Tensor, faces: Sequence[Face]) -> list[MeshFit | None]:
        """One MeshFit per face (None where the mesh does not fit: face score under
        FACE_SCORE_THRESHOLD, or eyes further than EYE_AGREEMENT x the eye distance from MTCNN's).
        photo: (3, H, W) RGB in [0, 1], the photo `faces` were detected on."""
        if not faces:
            return []
        first, _ = self.run(photo, [roi_from_face(face) for face in faces])
        points, scores = self.run(photo, [roi_from_points(p[:, :2]) for p in first])
        fits: list[MeshFit | None] = []
        for face, face_points, score in zip(faces, points, scores):
            fit = MeshFit(face_points, float(score))
            fits.append(fit if score >= FACE_SCORE_THRESHOLD and _eyes_agree(fit, face) else None)
        return fits


def eye_disagreement(fit: MeshFit, face: Face) -> float:
    """How far the mesh's eye centres are from MTCNN's eye landmarks: the larger of the two
    distances, as a share of MTCNN's eye distance."""
    points = dict(zip(LANDMARK_NAMES, face.landmarks))
    mtcnn = torch.tensor([points["left_eye"], points["right_eye"]], dtype=torch.float32)
    eye_distance = float((mtcnn[1] - mtcnn[0]).norm())
    return float((fit.eye_centres() - mtcnn).norm(dim=1).max()) / max(eye_distance, 1e-6)


def _eyes_agree(fit: MeshFit, face: Face) -> bool:
    return eye_disagreement(fit, face) <= EYE_AGREEMENT


_CACHE: dict[str, FaceMesh] = {}
_CACHE_LOCK = threading.Lock()


def load_face_mesh(device: str | torch.device = "cpu") -> FaceMesh:
    """The face mesh on `device`, loaded once and cached: treat it as read-only. Raises
    MissingWeightsError (naming `lowkey weights fetch face-mesh`) when the converted file is absent."""
    key = str(torch.device(device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            mesh = FaceMesh.load().to(device)
            mesh.requires_grad_(False)
            _CACHE[key] = mesh
        return _CACHE[key]
