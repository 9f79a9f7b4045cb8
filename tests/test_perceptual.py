"""The visibility measures: shading (the change's smooth, lighter or darker patches) against pixel
grain, on images with known answers, and the attack's shading penalty."""

import math

import pytest
import torch

from lowkey_engine.attack.lowkey import LowKeyAttack
from lowkey_engine.attack.perceptual import SHADING_SIGMA_PER_FACE, region_quality, shading_energy

LEVEL = 1 / 255


def _checkerboard(size: int, amplitude: float) -> torch.Tensor:
    rows = torch.arange(size).view(-1, 1)
    cols = torch.arange(size).view(1, -1)
    return ((rows + cols) % 2 * 2 - 1).float().expand(1, 3, size, size) * amplitude


def test_shading_counts_a_tone_shift_in_full_and_pixel_grain_hardly_at_all():
    everywhere = torch.ones(1, 1, 64, 64)
    shift = torch.full((1, 3, 64, 64), 2 * LEVEL)
    assert shading_energy(shift, everywhere, 2.0).sqrt().item() == pytest.approx(2.0, rel=1e-4)
    grain = _checkerboard(64, 2 * LEVEL)
    assert shading_energy(grain, everywhere, 2.0).sqrt().item() < 0.1


def test_shading_is_weighted_by_the_mask():
    change = torch.zeros(1, 1, 64, 64)
    change[..., :, 32:] = 3 * LEVEL
    left = torch.zeros(1, 1, 64, 64)
    left[..., :, :16] = 1
    right = left.flip(-1)
    assert shading_energy(change, left, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert shading_energy(change, right, 1.0).sqrt().item() == pytest.approx(3.0, rel=1e-4)


def test_region_quality_reports_shading_in_levels_and_nan_for_tiny_regions():
    original = torch.full((1, 3, 96, 96), 0.5)
    darker = original - 1.5 * LEVEL
    quality = region_quality(original, darker)
    assert quality["shading"] == pytest.approx(1.5, rel=1e-3)
    grain = region_quality(original, original + _checkerboard(96, 1.5 * LEVEL))
    assert grain["shading"] < 0.2 and grain["delta_e"] > 0.5    # same size per pixel, no shading
    assert math.isnan(region_quality(original[..., :8, :8], darker[..., :8, :8])["shading"])
    assert SHADING_SIGMA_PER_FACE * 96 == 3.0


def test_attack_with_a_shading_penalty_makes_less_shading(synthetic_attack_inputs):
    recognizer, crops, landmarks, mask = synthetic_attack_inputs
    knobs = dict(steps=8, step_size=0.004, epsilon=0.03, penalty_weight=0.0, colour="luma", robust=False)
    plain = LowKeyAttack([recognizer], shading_weight=0.0, **knobs)(crops, landmarks, mask)
    penalised = LowKeyAttack([recognizer], shading_weight=5.0, **knobs)(crops, landmarks, mask)
    sigma = SHADING_SIGMA_PER_FACE * crops.shape[-1]
    before = shading_energy(plain, mask, sigma)
    after = shading_energy(penalised, mask, sigma)
    assert (after < 0.5 * before).all()
    assert penalised.abs().max() <= 0.03 + 1e-6
    with torch.no_grad():
        clean = recognizer.embed(crops, landmarks)
        moved = recognizer.embed(crops + penalised, landmarks)
    assert ((clean * moved).sum(1) < 0.99).all()          # it still moves the embedding


def test_the_attack_blurs_shading_at_the_same_share_of_the_face_as_the_measure():
    from lowkey_engine.settings import ProtectSettings

    for width in (128, 256):
        attack = LowKeyAttack.from_settings(ProtectSettings(working_face_px=width), [object()])
        assert attack.shading_sigma == SHADING_SIGMA_PER_FACE * width


def test_large_faces_work_at_their_own_resolution_with_their_knobs_scaled():
    from lowkey_engine.settings import ProtectSettings

    settings = ProtectSettings(working_face_px=128, working_face_max_px=256)
    assert [settings.working_face_for(px) for px in (60, 128, 200, 900)] == [128, 128, 200, 256]
    assert ProtectSettings().working_face_for(900) == 128                 # the default stays put
    attack = LowKeyAttack.from_settings(settings, [object()], working_face_px=256)
    assert attack.shading_sigma == SHADING_SIGMA_PER_FACE * 256
    assert attack.blur_sigma == 2 * settings.blur_sigma and attack.blur_kernel == 13
    assert attack.shift_px == 2 * settings.shift_px
    same = LowKeyAttack.from_settings(settings, [object()])
    assert (same.blur_sigma, same.blur_kernel, same.shift_px) == (settings.blur_sigma, settings.blur_kernel,
                                                                   settings.shift_px)
