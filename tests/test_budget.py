"""The attack's perceptual budget (budget.py) and the attack knobs that shape its change: luma-only
changes, texture-following limits, the ΔE2000 cap, momentum and alignment jitter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lowkey_engine.attack.lowkey import LowKeyAttack
from lowkey_engine.attack.budget import PerceptualBudget, face_size_factors, local_contrast, luma
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


# --- the just-noticeable-difference budget map (jnd.py) on a real big face ---------------------------

JND_WORKING_SIZE = 230
#: A photos-deepface portrait with a big face (about 590 px wide), hair, brows and smooth skin.
JND_PORTRAIT = Path("photos-deepface") / "person01" / "img1.jpg"


@pytest.fixture(scope="module")
def jnd_face(faces_dir):
    """(working crop (1, 3, S, S), region masks, MTCNN box mask, budget map (1, 1, S, S), inputs to
    face_budget_maps) for the portrait's face."""
    from lowkey_engine.attack.crops import working_crops
    from lowkey_engine.attack.jnd import box_mask, face_budget_maps
    from lowkey_engine.attack.regions import region_masks
    from lowkey_engine.faces.detect import load_detector
    from lowkey_engine.faces.mesh import load_face_mesh
    from lowkey_engine.images.decode import decode_image

    pixels = decode_image((faces_dir / JND_PORTRAIT).read_bytes()).pixels
    faces = load_detector("cpu").detect(pixels)[:1]
    assert faces and faces[0].width > 400
    fits = load_face_mesh("cpu").fit(pixels, faces)
    boxes = torch.tensor([list(faces[0].box)])
    landmarks = torch.tensor([faces[0].landmarks])
    windows, crops, _, _ = working_crops(pixels, boxes, landmarks, margin=1.8, working_size=JND_WORKING_SIZE,
                                         feather=0.15)
    maps, meshed = face_budget_maps(pixels, faces, windows, JND_WORKING_SIZE, fits)
    assert meshed == [True]
    window = windows[0]
    masks = region_masks(window.to_working(fits[0].xy, JND_WORKING_SIZE), (JND_WORKING_SIZE,) * 2)
    box = box_mask(window.to_working(torch.tensor(faces[0].box).view(2, 2), JND_WORKING_SIZE), JND_WORKING_SIZE)
    return crops, masks, box, maps, (pixels, faces, windows, fits)


def _mean_over(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float((values * mask).sum() / mask.sum())


def test_jnd_map_gives_brows_and_hair_more_than_cheeks_and_the_frown_and_tired_zones_little(jnd_face):
    _, masks, _, maps, _ = jnd_face
    m = maps[0]
    # cheeks: skin that is none of the named small regions
    cheek = masks["skin"] * (1 - masks["nose"]) * (1 - masks["brow_furrow"]) * (1 - masks["under_eyes"]) \
        * (1 - masks["lip_edge"]) * (1 - masks["hairline"])
    cheek_mean = _mean_over(m, cheek)
    # measured on this portrait: brows 1.66, hairline 1.74, brow furrow 0.20, under the eyes 0.55,
    # eyes 0.83 times the cheeks' mean
    assert _mean_over(m, masks["brows"]) > 1.4 * cheek_mean
    assert _mean_over(m, masks["hairline"]) > 1.4 * cheek_mean
    assert _mean_over(m, masks["brow_furrow"]) < 0.5 * _mean_over(m, masks["brows"])
    assert _mean_over(m, masks["under_eyes"]) < 0.5 * _mean_over(m, masks["brows"])
    assert _mean_over(m, masks["eyes"]) < _mean_over(m, masks["brows"])


def test_jnd_map_normalisations_hold_over_the_face_box(jnd_face):
    from lowkey_engine.attack.jnd import MAX_SCALE, NORMALISE_QUANTILE, face_budget_maps

    _, _, box, maps, (pixels, faces, windows, fits) = jnd_face
    inside = maps[0][box > 0.5]
    assert abs(float(torch.quantile(inside, NORMALISE_QUANTILE)) - 1) < 1e-3
    assert float(maps.max()) <= MAX_SCALE and float(maps.min()) >= 0
    by_mean, _ = face_budget_maps(pixels, faces, windows, JND_WORKING_SIZE, fits, how="mean")
    assert abs(float(by_mean[0][box > 0.5].mean()) - 1) < 0.02
    with pytest.raises(ValueError, match="normalisation"):
        face_budget_maps(pixels, faces, windows, JND_WORKING_SIZE, fits, how="median")


def test_the_regions_map_keeps_the_whole_budget_on_skin_and_a_small_share_where_expressions_show(jnd_face):
    from lowkey_engine.attack.jnd import REGION_WEIGHTS, face_budget_maps

    _, masks, _, _, (pixels, faces, windows, fits) = jnd_face
    maps, meshed = face_budget_maps(pixels, faces, windows, JND_WORKING_SIZE, fits, kind="regions")
    m = maps[0]
    assert meshed == [True] and float(m.max()) == 1.0 and float(m.min()) >= min(REGION_WEIGHTS.values()) - 1e-6
    cheek = masks["skin"] * (1 - masks["nose"]) * (1 - masks["brow_furrow"]) * (1 - masks["under_eyes"]) \
        * (1 - masks["lip_edge"]) * (1 - masks["eyes"]) * (1 - masks["lips"])
    assert _mean_over(m, cheek) > 0.95
    assert _mean_over(m, masks["brow_furrow"]) < 0.5 and _mean_over(m, masks["under_eyes"]) < 0.5
    with pytest.raises(ValueError, match="budget map"):
        face_budget_maps(pixels, faces, windows, JND_WORKING_SIZE, fits, kind="uniform")


def test_a_face_without_a_mesh_fit_keeps_the_uniform_budget(jnd_face):
    from lowkey_engine.attack.jnd import face_budget_maps

    _, _, _, _, (pixels, faces, windows, _) = jnd_face
    maps, meshed = face_budget_maps(pixels, faces, windows, JND_WORKING_SIZE, [None])
    assert meshed == [False] and torch.equal(maps, torch.ones(1, 1, JND_WORKING_SIZE, JND_WORKING_SIZE))


@pytest.mark.parametrize("colour", ["luma", "rgb"])
def test_the_budgeted_change_respects_the_map(jnd_face, colour):
    crops, _, _, maps, _ = jnd_face
    budget = PerceptualBudget(12 / 255, colour=colour, delta_e_cap=2.6)
    uniform, scaled = budget.limits(crops), budget.limits(crops, maps)
    torch.testing.assert_close(scaled[0], uniform[0] * maps)
    mask = torch.ones_like(crops[:, :1])
    generator = torch.Generator().manual_seed(1)
    wild = torch.randn(1, budget.channels, *crops.shape[-2:], generator=generator).sign()   # +-1: far outside
    change = budget.project(wild, crops, mask, scaled, maps)
    darker, lighter = scaled
    assert (change >= -darker - 1e-6).all() and (change <= lighter + 1e-6).all()
    difference = delta_e2000(crops, crops + budget.to_rgb(change))[:, None]
    # ΔE2000 is only nearly linear in the change: an RGB change is scaled onto the ball (twice),
    # a luma change's limits are a probe step scaled linearly, which overshoots a little more where
    # the map allows big steps (measured: at most 1.19x the scaled cap, 99.9 % of pixels within 1.07x)
    worst = 1.25 if colour == "luma" else 1.1
    assert (difference <= 2.6 * maps * worst + 0.05).all()
    assert float(torch.quantile((difference / (2.6 * maps).clamp_min(1e-3)).flatten(), 0.999)) < 1.1
    # and the map is spent: where it allows more, the change is larger
    high, low = maps > 1.0, maps < 0.3
    assert float(difference[high].mean()) > 3 * float(difference[low].mean())
    with pytest.raises(ValueError, match="budget map"):
        PerceptualBudget(None).limits(crops, maps)


def test_the_attack_keeps_its_change_within_a_budget_map(synthetic_attack_inputs):
    recognizer, crops, landmarks, mask = synthetic_attack_inputs
    scale = torch.ones(2, 1, 112, 112)
    scale[..., :56] = 0.25                      # left half: a quarter of the budget
    attack = LowKeyAttack([recognizer], steps=3, step_size=0.01, epsilon=0.02, penalty_weight=0.0, colour="luma")
    change = attack(crops, landmarks, mask, budget_scale=scale)
    assert change[..., :56].abs().max() <= 0.005 + 1e-6
    assert change[..., 56:].abs().max() > 0.01


def test_faces_wider_than_the_reference_get_a_budget_shrinking_with_their_width():
    widths = torch.tensor([100.0, 200.0, 400.0, 800.0])
    torch.testing.assert_close(face_size_factors(widths, 200.0, 0.5), torch.tensor([1.0, 1.0, 0.5 ** 0.5, 0.5]))
    torch.testing.assert_close(face_size_factors(widths, 200.0, 1.0), torch.tensor([1.0, 1.0, 0.5, 0.25]))
    assert face_size_factors(widths, None, 0.5) is None            # off
    assert face_size_factors(widths, 1000.0, 0.5) is None          # no face is that wide
    with pytest.raises(ValueError):
        face_size_factors(widths, 0.0, 0.5)
