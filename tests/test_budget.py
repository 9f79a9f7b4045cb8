"""The attack's perceptual budget (budget.py) and the attack knobs that shape its change: luma-only
changes, texture-following limits, the ΔE2000 cap, momentum and alignment jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lowkey_engine.attack.lowkey import LowKeyAttack
from lowkey_engine.attack.budget import PerceptualBudget, local_contrast, luma
from lowkey_engine.attack.colour import delta_e2000


def _lfw_photo(faces_dir) -> torch.Tensor:
    path = sorted((faces_dir / "lfw-dev").glob("*/*.jpg"))[0]
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def test_luma_and_local_contrast_on_known_images():
    grey = torch.full((1, 3, 20, 20), 0.4)
    torch.testing.assert_close(luma(grey), torch.full((1, 1, 20, 20), 0.4))
    torch.testing.assert_close(luma(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)), torch.tensor(0.299).view(1, 1, 1, 1))
    assert local_contrast(grey).max() < 1e-3
    stripes = torch.zeros(1, 3, 20, 20)
    stripes[..., ::2] = 1.0                   # luma std 0.5 everywhere
    assert local_contrast(stripes)[..., 5:15, 5:15].min() > 0.45


def test_texture_following_limits_give_flat_areas_the_floor_and_texture_the_full_budget():
    image = torch.full((1, 3, 40, 40), 0.5)
    image[..., 20:, ::2] = 0.9                 # bottom half textured, top half flat
    budget = PerceptualBudget(0.04, texture_floor=0.25)
    darker, lighter = budget.limits(image)
    torch.testing.assert_close(darker, lighter)
    assert torch.allclose(darker[..., :10, :], torch.tensor(0.01), atol=5e-4)
    assert torch.allclose(darker[..., 30:, :], torch.tensor(0.04), atol=5e-4)
    assert PerceptualBudget(None).limits(image) is None


def test_projection_keeps_every_channel_in_range_and_luma_changes_grey():
    crops = torch.tensor([0.98, 0.5, 0.02]).view(1, 3, 1, 1).expand(1, 3, 4, 4).clone()
    mask = torch.ones(1, 1, 4, 4)
    budget = PerceptualBudget(0.1, colour="luma")
    up = budget.project(torch.full((1, 1, 4, 4), 0.1), crops, mask, budget.limits(crops))
    down = budget.project(torch.full((1, 1, 4, 4), -0.1), crops, mask, budget.limits(crops))
    assert torch.allclose(up, torch.tensor(0.02)) and torch.allclose(down, torch.tensor(-0.02))
    rgb = budget.to_rgb(up)
    assert rgb.shape == (1, 3, 4, 4) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert ((crops + rgb) <= 1).all() and ((crops + budget.to_rgb(down)) >= 0).all()
    with pytest.raises(ValueError):
        PerceptualBudget(0.1, colour="rgb", delta_e_cap=0.0)
    with pytest.raises(ValueError):
        PerceptualBudget(0.1, colour="hsv")


def test_a_colour_change_is_scaled_onto_the_delta_e_ball_and_keeps_its_direction():
    generator = torch.Generator().manual_seed(0)
    crops = torch.rand(2, 3, 32, 32, generator=generator) * 0.6 + 0.2
    change = (torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1) * 0.05      # up to ~13 levels
    mask = torch.ones(2, 1, 32, 32)
    budget = PerceptualBudget(12 / 255, colour="rgb", delta_e_cap=2.2)
    projected = budget.project(change, crops, mask, budget.limits(crops))
    difference = delta_e2000(crops, crops + projected)
    assert float(difference.max()) <= 2.2 * 1.06                  # the ball, to ΔE2000's non-linearity
    assert float(difference.median()) >= 2.2 * 0.9                # large changes end on its surface
    # scaled, not clipped per channel: each pixel keeps its colour direction
    clipped = change.clamp(-12 / 255, 12 / 255)
    cosine = torch.nn.functional.cosine_similarity(projected, clipped, dim=1)
    assert float(cosine.min()) > 0.999
    small = change * 0.01
    torch.testing.assert_close(budget.project(small, crops, mask, budget.limits(crops)), small)


def test_delta_e_cap_holds_for_the_largest_change_it_allows_on_a_real_photo(faces_dir):
    photo = _lfw_photo(faces_dir)
    budget = PerceptualBudget(None, colour="luma", delta_e_cap=2.5)
    darker, lighter = budget.limits(photo)
    mask = torch.ones_like(photo[:, :1])
    for extreme in (lighter, -darker):
        change = budget.project(extreme, photo, mask, (darker, lighter))
        difference = delta_e2000(photo, (photo + budget.to_rgb(change)).clamp(0, 1))
        assert float(torch.quantile(difference.flatten(), 0.99)) <= 2.5 * 1.1
        assert float(difference.median()) >= 2.5 * 0.8          # the cap is used, not undershot
    # the same ΔE takes more 8-bit levels on bright skin than in dark hair
    levels = lighter.flatten()
    brightness = luma(photo).flatten()
    assert levels[brightness > 0.7].median() > levels[brightness < 0.2].median()


def test_luma_attack_with_momentum_and_jitter_changes_lightness_only_within_its_budget(synthetic_attack_inputs):
    recognizer, crops, landmarks, mask = synthetic_attack_inputs
    attack = LowKeyAttack([recognizer], steps=3, step_size=0.01, epsilon=0.02, penalty_weight=0.0, colour="luma",
                          momentum=0.9, align_zoom=0.1, align_rotation_deg=5.0)
    change = attack(crops, landmarks, mask)
    assert change.shape == crops.shape and change.abs().max() <= 0.02 + 1e-6
    assert torch.equal(change[:, 0], change[:, 1]) and torch.equal(change[:, 1], change[:, 2])
    with torch.no_grad():
        before, after = recognizer.embed(crops, landmarks), recognizer.embed(crops + change, landmarks)
    assert ((before * after).sum(1) < 0.99).all()
    assert torch.equal(change, attack(crops, landmarks, mask))


def test_alignment_jitter_stays_within_its_ranges():
    landmarks = torch.tensor([[[40.0, 50], [70, 50], [55, 65], [45, 80], [65, 80]]]).expand(500, 5, 2)
    still = LowKeyAttack([object()], shift_px=0.0, align_zoom=0.0, align_rotation_deg=0.0)
    torch.testing.assert_close(still._jitter_landmarks(landmarks, torch.Generator().manual_seed(0)), landmarks)
    moving = LowKeyAttack([object()], shift_px=0.0, align_zoom=0.1, align_rotation_deg=0.0)
    out = moving._jitter_landmarks(landmarks, torch.Generator().manual_seed(0))
    spread = (out[:, 1, 0] - out[:, 0, 0]) / 30               # eye distance relative to the original
    assert spread.min() >= 0.9 - 1e-4 and spread.max() <= 1.1 + 1e-4 and spread.std() > 0.03
    torch.testing.assert_close(out.mean(1), landmarks.mean(1))              # zoom about the centre
    turning = LowKeyAttack([object()], shift_px=0.0, align_zoom=0.0, align_rotation_deg=10.0)
    out = turning._jitter_landmarks(landmarks, torch.Generator().manual_seed(0))
    angle = torch.rad2deg(torch.atan2(out[:, 1, 1] - out[:, 0, 1], out[:, 1, 0] - out[:, 0, 0]))
    assert angle.abs().max() <= 10 + 1e-3 and angle.abs().max() > 8
