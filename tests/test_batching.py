"""Several photos in one attack batch (lowkey_engine/batching.py, protect.prepare/protect_prepared)
on real photos and the real ensemble.

tests/test_attack_parts.py proves, bit for bit with stand-in recognizers, that a photo's attack
does not depend on its batch. With the real networks a batch of another size changes the last bits
of their convolutions, which the signed steps can amplify here and there; these tests hold the
batched protection to its single-photo twin in what matters: the same faces, the same visibility,
the same distance from the clean face for every attacked recognizer.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lowkey_engine import batching
from lowkey_engine.batching import measure_face_budget, protect_many
from lowkey_engine.faces.detect import load_detector
from lowkey_engine.faces.recognizers import DEFAULT_ENSEMBLE, load_recognizer
from lowkey_engine.images.decode import decode_image
from lowkey_engine.images.errors import ImageError
from lowkey_engine.protect import prepare, protect_prepared
from lowkey_engine.settings import ProtectSettings

FAST = ProtectSettings.from_preset("fast", device="cpu")
CHEAP = FAST.replace(steps=2)
#: Batched against alone, with the real networks: the most the photos may differ on average
#: (8-bit levels; measured 0.07-0.30), a face's ΔE2000 p95, and a recognizer's clean-to-protected
#: cosine (measured within 0.02).
MEAN_LEVELS_APART = 1.0
DELTA_E_P95_APART = 0.15
COSINE_APART = 0.06


@pytest.fixture(scope="module")
def album(faces_dir) -> list[bytes]:
    """A group photo (3 faces), a portrait and two LFW photos."""
    lfw = sorted(p for p in (faces_dir / "lfw-dev").iterdir() if p.is_dir())
    return [(faces_dir / "photos-group" / "sample1.jpg").read_bytes(),
            (faces_dir / "photos-group" / "obama.jpg").read_bytes(),
            *(sorted(folder.iterdir())[0].read_bytes() for folder in lfw[:2])]


def clean_to_protected_cosines(original: bytes, protected: bytes) -> list[float]:
    """Per attacked recognizer, the cosine of the central face's embedding before and after."""
    before, after = decode_image(original).pixels, decode_image(protected).pixels
    face = max(load_detector("cpu").detect(before), key=lambda f: f.width)
    landmarks = torch.tensor(face.landmarks)[None]
    cosines = []
    for model in DEFAULT_ENSEMBLE:
        recognizer = load_recognizer(model)
        with torch.no_grad():
            cosines.append(float((recognizer.embed(before[None], landmarks)
                                  * recognizer.embed(after[None], landmarks)).sum()))
    return cosines


def test_a_photo_protected_in_a_batch_is_protected_as_it_is_alone(album):
    batched = protect_prepared([prepare(photo, FAST) for photo in album])
    for photo, together in zip(album, batched):
        alone = protect_prepared([prepare(photo, FAST)])[0]
        assert [f.box for f in together.faces] == [f.box for f in alone.faces] and together.faces
        for a, b in zip(alone.faces, together.faces):
            assert abs(a.delta_e_p95 - b.delta_e_p95) < DELTA_E_P95_APART
        levels = np.abs(np.asarray(Image.open(io.BytesIO(alone.data)), dtype=float)
                        - np.asarray(Image.open(io.BytesIO(together.data)), dtype=float))
        assert levels.mean() < MEAN_LEVELS_APART
        np.testing.assert_allclose(clean_to_protected_cosines(photo, together.data),
                                   clean_to_protected_cosines(photo, alone.data), atol=COSINE_APART)
    # the first photo's faces lead the batch: those rows come out as alone, bit for bit
    assert batched[0].data == protect_prepared([prepare(album[0], FAST)])[0].data


def test_protect_many_cuts_batches_at_the_face_budget_and_answers_every_photo(album, monkeypatch):
    batches = []

    def recording(photos):
        batches.append([p.face_count for p in photos])
        return protect_prepared(photos)

    monkeypatch.setattr(batching, "protect_prepared", recording)
    blank = io.BytesIO()
    Image.new("RGB", (64, 48), "white").save(blank, "PNG")
    stream = [album[2], b"not an image", album[0], blank.getvalue(), album[1], album[3]]
    outcomes = dict(protect_many(stream, CHEAP, face_budget=4))
    assert sorted(outcomes) == list(range(len(stream)))
    assert isinstance(outcomes[1], ImageError)
    assert outcomes[3].faces == () and outcomes[3].format == "PNG"           # no face: at once, alone
    assert [len(outcomes[i].faces) for i in (0, 2, 4, 5)] == [1, 3, 1, 1]
    # 1 + 3 faces fill the budget; the blank photo went on its own; then 1 + 1
    assert batches == [[0], [1, 3], [1, 1]]
    with pytest.raises(ValueError):
        next(protect_many(stream, CHEAP, face_budget=0))


def test_progress_reaches_every_photo_of_a_batch(album):
    stages: dict[int, list[str]] = {}
    for _, outcome in protect_many(album[:3], CHEAP, lambda i: lambda stage, done, total:
                                       stages.setdefault(i, []).append(stage), face_budget=8):
        assert not isinstance(outcome, Exception)
    for index in range(3):
        assert stages[index][:3] == ["decode", "detect", "detect"]
        assert stages[index].count("attack") == CHEAP.steps and stages[index][-1] == "encode"


def test_the_measured_face_budget_is_one_of_the_sizes_tried():
    budget = measure_face_budget(CHEAP, candidates=(1, 2))
    assert budget in (1, 2)
