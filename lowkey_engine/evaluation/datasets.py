"""Labelled photo folders (`<root>/<identity>/<photo>`) for evaluation, tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


@dataclass(frozen=True)
class LabelledPhoto:
    identity: str
    path: Path


def labelled_photos(root: str | Path, *, min_per_identity: int = 1, max_per_identity: int | None = None,
                    max_identities: int | None = None) -> list[LabelledPhoto]:
    """Photos under `root/<identity>/`, identities and files in sorted (repeatable) order.

    Identities with fewer than `min_per_identity` photos are skipped; at most `max_per_identity`
    photos are taken from each, and at most `max_identities` identities in all.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no photo folder at {root}")
    chosen: list[LabelledPhoto] = []
    identities = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        if len(photos) < min_per_identity:
            continue
        chosen += [LabelledPhoto(folder.name, p) for p in photos[:max_per_identity]]
        identities += 1
        if max_identities is not None and identities >= max_identities:
            break
    return chosen


def most_central(faces: list, width: int, height: int):
    """The face whose box centre is nearest the photo's centre (the subject of a cropped portrait,
    as in LFW), or None. `faces` are records with a `box` (x1, y1, x2, y2) in pixels."""
    if not faces:
        return None

    def distance(face) -> float:
        x1, y1, x2, y2 = (float(v) for v in face.box)
        return ((x1 + x2) / 2 - width / 2) ** 2 + ((y1 + y2) / 2 - height / 2) ** 2

    return min(faces, key=distance)


@dataclass
class SubjectFaces:
    """Same-size photos of known identities with the landmarks of each photo's subject."""

    images: torch.Tensor          # (N, 3, H, W) uint8 RGB
    landmarks: torch.Tensor       # (N, 5, 2) continuous pixel coordinates
    identities: list[str]
    missed: int                   # photos where no face was found (left out)

    def batches(self, size: int):
        """(pixels in [0, 1] float, landmarks) in batches of `size`."""
        for start in range(0, len(self.identities), size):
            stop = start + size
            yield self.images[start:stop].float() / 255.0, self.landmarks[start:stop]


def detect_subjects(photos: list[LabelledPhoto], detector) -> SubjectFaces:
    """Decode same-size portrait photos (as LFW's) and find each one's central face."""
    import numpy as np
    import torch
    from PIL import Image

    images, landmarks, identities, missed = [], [], [], 0
    for photo in photos:
        with Image.open(photo.path) as opened:
            pixels = torch.from_numpy(np.array(opened.convert("RGB"))).permute(2, 0, 1)
        face = most_central(detector.detect(pixels.float() / 255.0), pixels.shape[2], pixels.shape[1])
        if face is None:
            missed += 1
            continue
        images.append(pixels)
        landmarks.append(torch.as_tensor(face.landmarks, dtype=torch.float32))
        identities.append(photo.identity)
    return SubjectFaces(torch.stack(images), torch.stack(landmarks), identities, missed)
