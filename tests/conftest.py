"""Shared fixtures: where the face photos are, and LFW faces detected once per test session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

#: The face photos live beside the checkout (../shared/data/faces), never inside it.
FACES_DIR = Path(os.environ.get("LOWKEY_FACES_DIR",
                                Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"))

#: LFW subset for verification: identities with at least this many photos, this many each.
LFW_PHOTOS_PER_IDENTITY = 4
LFW_IDENTITIES = 150


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES_DIR.is_dir():
        pytest.fail(f"face photos not found at {FACES_DIR} (set LOWKEY_FACES_DIR)")
    return FACES_DIR


@dataclass
class AlignedSet:
    """Photos of known identities with the landmarks of their subject's face."""

    images: torch.Tensor        # (N, 3, H, W) uint8 RGB
    landmarks: torch.Tensor     # (N, 5, 2) pixels
    identities: list[str]

    def batches(self, size: int):
        for start in range(0, len(self.identities), size):
            stop = start + size
            yield self.images[start:stop].float() / 255.0, self.landmarks[start:stop]


@pytest.fixture(scope="session")
def lfw_faces(faces_dir) -> AlignedSet:
    """LFW photos (same size, 250x250) whose central face the project's detector found."""
    from lowkey_engine.datasets import labelled_photos, most_central
    from lowkey_engine.detect import load_detector

    detector = load_detector("cpu")
    photos = labelled_photos(faces_dir / "lfw-dev", min_per_identity=LFW_PHOTOS_PER_IDENTITY,
                             max_per_identity=LFW_PHOTOS_PER_IDENTITY, max_identities=LFW_IDENTITIES)
    images, landmarks, identities = [], [], []
    for photo in photos:
        pixels = torch.from_numpy(np.asarray(Image.open(photo.path).convert("RGB"))).permute(2, 0, 1)
        face = most_central(detector.detect(pixels.float() / 255.0), pixels.shape[2], pixels.shape[1])
        if face is None:
            continue
        images.append(pixels)
        landmarks.append(torch.as_tensor(face.landmarks, dtype=torch.float32))
        identities.append(photo.identity)
    assert len(identities) >= 0.95 * len(photos), "detector missed too many LFW faces"
    return AlignedSet(torch.stack(images), torch.stack(landmarks), identities)
