"""Shared fixtures: where the face photos and the model-file mirror are, and LFW faces detected once
per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lowkey_engine.evaluation.datasets import SubjectFaces, detect_subjects, labelled_photos
from lowkey_weights.fetch import MIRROR_ENV, mirror_dir

#: The face photos live beside the checkout (../shared/data/faces), never inside it.
FACES_DIR = Path(os.environ.get("LOWKEY_FACES_DIR",
                                Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"))

#: Upstream model files mirrored beside the checkout (../shared/weights): the fetch step reads them
#: through $LOWKEY_WEIGHTS_MIRROR, which the tests point there (as install/setup.sh does) unless set.
DEFAULT_WEIGHTS_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "weights"
if not os.environ.get(MIRROR_ENV) and DEFAULT_WEIGHTS_MIRROR.is_dir():
    os.environ[MIRROR_ENV] = str(DEFAULT_WEIGHTS_MIRROR)

#: LFW subset for verification: identities with at least this many photos, this many each.
LFW_PHOTOS_PER_IDENTITY = 4
LFW_IDENTITIES = 150


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES_DIR.is_dir():
        pytest.fail(f"face photos not found at {FACES_DIR} (set LOWKEY_FACES_DIR)")
    return FACES_DIR


@pytest.fixture(scope="session")
def weights_mirror() -> Path:
    """The mirror folder of upstream model files ($LOWKEY_WEIGHTS_MIRROR)."""
    mirror = mirror_dir()
    if mirror is None or not mirror.is_dir():
        pytest.fail(f"model-file mirror not found at {mirror or DEFAULT_WEIGHTS_MIRROR} (set {MIRROR_ENV})")
    return mirror


@pytest.fixture(scope="session")
def lfw_faces(faces_dir) -> SubjectFaces:
    """LFW photos (all 250x250) with the landmarks of their central face."""
    from lowkey_engine.faces.detect import load_detector

    photos = labelled_photos(faces_dir / "lfw-dev", min_per_identity=LFW_PHOTOS_PER_IDENTITY,
                             max_per_identity=LFW_PHOTOS_PER_IDENTITY, max_identities=LFW_IDENTITIES)
    faces = detect_subjects(photos, load_detector("cpu"))
    assert faces.missed <= 0.05 * len(photos), "detector missed too many LFW faces"
    return faces


@pytest.fixture
def synthetic_attack_inputs():
    """(mfn-expo recognizer, two noisy grey 112 px crops, landmarks on its template, feathered
    masks): the smallest input an attack step runs on."""
    import torch

    from lowkey_engine.attack.crops import feather_mask
    from lowkey_engine.faces.recognizers import load_recognizer

    recognizer = load_recognizer("mfn-expo")
    generator = torch.Generator().manual_seed(0)
    crops = torch.rand(2, 3, 112, 112, generator=generator) * 0.2 + 0.4
    landmarks = recognizer._template.expand(2, 5, 2).clone()
    mask = feather_mask(112, 0.1)[None].expand(2, 1, 112, 112)
    return recognizer, crops, landmarks, mask
