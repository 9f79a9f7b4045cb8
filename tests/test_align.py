"""Similarity alignment: exact on synthetic transforms, differentiable, pixel-centre convention."""

import math

import torch

from lowkey_engine.faces.align import ARCFACE_TEMPLATE_112, similarity_transform, warp_faces


def test_recovers_a_known_similarity_transform():
    template = torch.tensor(ARCFACE_TEMPLATE_112)
    angle, scale, shift = math.radians(17), 2.3, torch.tensor([40.0, -12.0])
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    landmarks = (template @ rotation.T) * scale + shift          # template -> photo
    matrix = similarity_transform(landmarks, template)           # photo -> template
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    torch.testing.assert_close(mapped, template, atol=1e-3, rtol=0)


def test_batched_fit_matches_single_fits():
    template = torch.tensor(ARCFACE_TEMPLATE_112)
    landmarks = template + torch.randn(3, 5, 2) * 3
    batched = similarity_transform(landmarks, template)
    for i in range(3):
        torch.testing.assert_close(batched[i], similarity_transform(landmarks[i], template))


def test_identity_warp_is_exact_and_translation_moves_by_whole_pixels():
    image = torch.rand(1, 3, 20, 20)
    identity = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    torch.testing.assert_close(warp_faces(image, identity, 20), image, atol=1e-5, rtol=0)
    # source pixel (x, y) lands at output (x - 3, y - 2)
    shift = torch.tensor([[[1.0, 0, -3], [0, 1.0, -2]]])
    torch.testing.assert_close(warp_faces(image, shift, 10), image[:, :, 2:12, 3:13], atol=1e-5, rtol=0)


def test_warp_is_differentiable_in_the_pixels():
    image = torch.rand(2, 3, 64, 64, requires_grad=True)
    matrices = similarity_transform(torch.tensor(ARCFACE_TEMPLATE_112).expand(2, 5, 2) * 0.5,
                                    torch.tensor(ARCFACE_TEMPLATE_112))
    warp_faces(image, matrices, 112).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
