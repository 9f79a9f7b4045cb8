"""Input diversity (attack/diversity.py): each kind changes the faces it is drawn for, keeps the
shape, lets gradients through to the pixels, and leaves the other faces as they were."""

import pytest
import torch

from lowkey_engine.attack.diversity import KINDS, InputDiversity


def _faces(count=3, size=112):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "none"])
def test_each_kind_changes_the_face_and_passes_gradients(kind):
    faces = _faces().requires_grad_(True)
    seen = InputDiversity(kind, probability=1.0)(faces, torch.Generator().manual_seed(1))
    assert seen.shape == faces.shape
    assert (seen - faces).abs().mean() > 0.05
    assert 0 <= float(seen.min()) and float(seen.max()) <= 1
    seen.sum().backward()
    assert faces.grad.abs().sum() > 0


def test_probability_zero_and_none_are_the_identity():
    faces = _faces()
    generator = torch.Generator().manual_seed(1)
    assert torch.equal(InputDiversity("block_shuffle", probability=0.0)(faces, generator), faces)
    assert torch.equal(InputDiversity("none")(faces, generator), faces)


def test_block_shuffle_without_rotation_only_moves_tiles():
    faces = _faces(size=112)
    seen = InputDiversity("block_shuffle", probability=1.0, rotation_deg=0.0)(faces, torch.Generator().manual_seed(3))
    for before, after in zip(faces, seen):
        assert torch.allclose(before.flatten().sort().values, after.flatten().sort().values, atol=1e-5)
        def tile_sums(face):
            return face.unfold(1, 56, 56).unfold(2, 56, 56).sum((0, 3, 4)).flatten().sort().values

        assert torch.allclose(tile_sums(before), tile_sums(after), rtol=1e-5)
        assert not torch.equal(before, after)


def test_resize_pad_shrinks_into_grey_border():
    faces = torch.zeros(2, 3, 112, 112)
    seen = InputDiversity("resize_pad", probability=1.0, resize_min=0.8)(faces, torch.Generator().manual_seed(0))
    grey = (seen - 0.5).abs() < 1e-4
    assert grey.float().mean() > 0.01          # some border is grey
    assert (seen < 0.25).float().mean() > 0.6   # most of the black face is still there


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="input diversity"):
        InputDiversity("mixup")
