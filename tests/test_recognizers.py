"""Every recognizer in the zoo is genuinely pretrained and wired right.

A loader that "works" but embeds every face alike sits near ROC AUC 0.5; a pretrained model with
the right preprocessing and alignment separates identities on LFW (MODELS.md's figures).
"""

from __future__ import annotations

import pytest
import torch

from lowkey_engine.evaluation.metrics import verification_auc
from lowkey_engine.faces.paths import MissingWeightsError
from lowkey_engine.faces.recognizers import DEFAULT_ENSEMBLE, SPECS, load_recognizer
from lowkey_weights.manifest import load_manifest

RECOGNIZERS = [i for i, entry in load_manifest().items() if i in SPECS and not entry.needs_internet]
MIN_AUC = 0.95
PAIRS_PER_LABEL = 600          # 600 same + 600 different pairs: >= 1,000 in all
BATCH = 32


@pytest.fixture(scope="module", params=RECOGNIZERS)
def recognizer(request):
    return load_recognizer(request.param)


def embed_all(recognizer, faces) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([recognizer.embed(images, landmarks) for images, landmarks in faces.batches(BATCH)])


def test_verification_auc_on_lfw(recognizer, lfw_faces):
    embeddings = embed_all(recognizer, lfw_faces)
    assert embeddings.shape == (len(lfw_faces.identities), recognizer.spec.embedding_dim)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(len(embeddings)), atol=1e-4)
    auc, n_same, n_different = verification_auc(embeddings, lfw_faces.identities, PAIRS_PER_LABEL, seed=0)
    assert n_same + n_different >= 1000 and n_same >= 500
    print(f"{recognizer.spec.id}: LFW verification ROC AUC {auc:.4f} on {n_same + n_different} pairs")
    assert auc >= MIN_AUC


def test_gradients_reach_the_input(recognizer, lfw_faces):
    images = lfw_faces.images[:2].float().div(255.0).requires_grad_(True)
    embedding = recognizer.embed(images, lfw_faces.landmarks[:2])
    embedding[:, 0].sum().backward()
    assert images.grad is not None
    assert torch.isfinite(images.grad).all()
    # Every face's own pixels receive gradient, and only around the face (not the whole frame).
    per_image = images.grad.abs().flatten(1).sum(1)
    assert (per_image > 0).all()


def test_same_embedding_alone_or_in_a_batch(recognizer, lfw_faces):
    images = lfw_faces.images[:4].float() / 255.0
    landmarks = lfw_faces.landmarks[:4]
    with torch.no_grad():
        batched = recognizer.embed(images, landmarks)
        alone = torch.cat([recognizer.embed(images[i:i + 1], landmarks[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)


def test_held_out_model_is_not_in_the_default_ensemble():
    assert "dlib-resnet" not in DEFAULT_ENSEMBLE
    assert SPECS["dlib-resnet"].held_out
    assert set(DEFAULT_ENSEMBLE) <= set(SPECS)


def test_missing_model_file_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWKEY_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"lowkey weights fetch mfn-expo"):
        load_recognizer("mfn-expo", device="meta")
