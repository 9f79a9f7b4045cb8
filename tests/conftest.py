"""Shared fixtures: where the face photos and the model-file mirror are, and LFW faces detected once
per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lowkey_engine.evaluation.datasets import SubjectFaces, detect_subjects, labelled_photos
from lowkey_weights.datasets import DATA_MIRROR_ENV, is_fetched, load_datasets
from lowkey_weights.datasets import faces_dir as fetched_faces_dir
from lowkey_weights.fetch import MIRROR_ENV, mirror_dir

#: Local mirrors of the upstream model files and photos beside the checkout (../shared/weights,
#: ../shared/data), standing in for the internet: the fetch steps read them through
#: $LOWKEY_WEIGHTS_MIRROR and $LOWKEY_DATA_MIRROR, which the tests point there (as install/setup.sh
#: does) unless they are set. The tests themselves read photos only from the fetched folder.
_BESIDE_THE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_WEIGHTS_MIRROR = _BESIDE_THE_CHECKOUT / "weights"
DEFAULT_DATA_MIRROR = _BESIDE_THE_CHECKOUT / "data"
for _variable, _default in ((MIRROR_ENV, DEFAULT_WEIGHTS_MIRROR), (DATA_MIRROR_ENV, DEFAULT_DATA_MIRROR)):
    if not os.environ.get(_variable) and _default.is_dir():
        os.environ[_variable] = str(_default)

#: The command that fetches the photos (setup runs it).
FETCH_PHOTOS = "./install/setup.sh (or `.venv/bin/lowkey datasets fetch`)"

#: LFW subset for verification: identities with at least this many photos, this many each.
LFW_PHOTOS_PER_IDENTITY = 4
LFW_IDENTITIES = 150


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The fetched photo sets (data/faces in the checkout, or $LOWKEY_DATA_DIR/faces): every default
    set of weights/datasets.toml, fetched completely, each file verified by its sha256."""
    root = fetched_faces_dir()
    missing = [s.id for s in load_datasets().values() if s.default and not is_fetched(s, root)]
    if missing:
        pytest.fail(f"face photos {', '.join(missing)} are not fetched into {root}: run {FETCH_PHOTOS}")
    return root


@pytest.fixture(scope="session")
def data_mirror() -> Path:
    """The mirror folder of the photos' upstream files ($LOWKEY_DATA_MIRROR)."""
    mirror = mirror_dir(DATA_MIRROR_ENV)
    if mirror is None or not mirror.is_dir():
        pytest.fail(f"photo mirror not found at {mirror or DEFAULT_DATA_MIRROR} (set {DATA_MIRROR_ENV})")
    return mirror


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
