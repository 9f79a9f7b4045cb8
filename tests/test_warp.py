"""The geometry carrier (attack/warp.py GuidedWarp, attack/face_parts.py): its budget is a share of
the face's width at any face size, it holds the eyes, brows and outline still and lets the nose
and mouth move, the additive change is measured after it, and on a real face it buys what the
additive change alone does not."""

from __future__ import annotations

import pytest
import torch

from lowkey_engine.attack.colour import delta_e2000
from lowkey_engine.attack.crops import feather_mask, widths_in_crops, working_crops
from lowkey_engine.attack.face_parts import BROW_RAISE, FACE_HALF_WIDTH, five_point_parts, mobility
from lowkey_engine.attack.lowkey import LowKeyAttack
from lowkey_engine.attack.warp import GuidedWarp, largest_displacement_share

#: Five points of a frontal face (faces.detect.LANDMARK_NAMES order), as shares of its width, with
#: the face's box from (0, 0) to (1, 1.2): eyes 0.4 apart, mouth 0.45 below them.
FACE_POINTS = torch.tensor([[0.3, 0.45], [0.7, 0.45], [0.5, 0.65], [0.34, 0.9], [0.66, 0.9]])


def face_in_crop(size: int, face_width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Landmarks (1, 5, 2) of a FACE_POINTS face `face_width` pixels wide, centred in a crop of
    `size` pixels, and its width (1,)."""
    box_centre = torch.tensor([0.5, 0.6]) * face_width
    points = FACE_POINTS * face_width - box_centre + size / 2
    return points[None], torch.tensor([face_width])


def mobility_at(weights: torch.Tensor, points: torch.Tensor) -> list[float]:
    return [float(weights[0, 0, int(y), int(x)]) for x, y in points.tolist()]


@pytest.mark.parametrize("size,face_width", [(64, 36), (230, 128), (512, 280)])
def test_no_displacement_is_longer_than_its_share_of_the_face_width_at_any_face_size(size, face_width):
    share = 0.01
    warp = GuidedWarp(grid=8, face_share=share)
    landmarks, widths = face_in_crop(size, face_width)
    mask = feather_mask(size, 0.15)[None]
    reach = warp.reach(landmarks, mask, widths)
    generator = torch.Generator().manual_seed(1)
    for scale in (0.3, 5.0, 100.0):                    # inside the disc, well outside, saturated
        field = warp.project(torch.randn(4, 2, 8, 8, generator=generator) * scale)
        assert float(field.norm(dim=1).max()) <= 1 + 1e-6
        displacement = warp.displacement(field, reach.expand(4, -1, -1, -1))
        longest = largest_displacement_share(displacement, widths.expand(4))
        assert float(longest.max()) <= share + 1e-6
    # the whole budget is reachable (in the middle of the face), and nothing moves at the border
    uniform = warp.displacement(warp.project(torch.ones(1, 2, 8, 8)), reach)
    assert float(largest_displacement_share(uniform, widths)) > 0.95 * share
    assert float(uniform[..., 0, :].abs().max()) == 0 and float(uniform[..., :, -1].abs().max()) == 0
    with pytest.raises(ValueError):
        warp.reach(landmarks, mask)                     # the budget needs the face's width


def test_the_mobility_map_holds_eyes_brows_and_outline_still_and_frees_nose_and_mouth():
    size, face_width = 256, 140.0
    landmarks, widths = face_in_crop(size, face_width)
    weights = mobility(five_point_parts(landmarks, widths, size), feather_mask(size, 0.15)[None])
    eyes, nose, mouth = landmarks[0, :2], landmarks[0, 2:3], landmarks[0, 3:].mean(0, keepdim=True)
    brows = eyes - torch.tensor([0.0, BROW_RAISE * face_width])
    between_brows = brows.mean(0, keepdim=True)
    centre_x, eye_y = float(eyes[:, 0].mean()), float(eyes[0, 1])
    cheek_y = (eye_y + float(mouth[0, 1])) / 2
    outline = torch.tensor([[centre_x - FACE_HALF_WIDTH * face_width, cheek_y],
                            [centre_x + FACE_HALF_WIDTH * face_width, cheek_y],
                            [centre_x, float(mouth[0, 1]) + 0.4 * face_width]])          # jaw, chin
    assert max(mobility_at(weights, torch.cat([eyes, brows, between_brows]))) < 0.02
    assert max(mobility_at(weights, outline)) < 0.02
    assert min(mobility_at(weights, torch.cat([nose, mouth]))) > 0.9
    assert float(weights[0, 0, :, :4].max()) == 0                    # and nothing at the crop's edge
    # a warp at its whole budget leaves the eyes' pixels where they were and moves the nose's
    warp = GuidedWarp(grid=6, face_share=0.03)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    moved = warp.apply(image, warp.project(torch.ones(1, 2, 6, 6)), warp.reach(landmarks, weights, widths))
    change = (moved - image).abs().amax(1)[0]

    def around(point: torch.Tensor, radius: int = 3) -> torch.Tensor:
        x, y = (int(v) for v in point)
        return change[y - radius:y + radius + 1, x - radius:x + radius + 1]

    assert all(float(around(eye).max()) < 1e-3 for eye in eyes)
    assert float(around(nose[0]).mean()) > 0.05


def test_undoing_the_warp_recovers_the_additive_part_within_its_own_budget(synthetic_attack_inputs):
    recognizer, crops, landmarks, mask = synthetic_attack_inputs
    widths = torch.full((crops.shape[0],), 64.0)
    cap = 2.0
    attack = LowKeyAttack([recognizer], steps=3, step_size=0.01, delta_e_cap=cap, penalty_weight=0.0,
                          shading_weight=0.0, warp_face_share=0.02, warp_grid=6)
    result = attack.run(crops, landmarks, mask, face_widths=widths)
    assert result.displacement is not None and torch.equal(attack(crops, landmarks, mask, face_widths=widths),
                                                          result.change)
    shares = result.largest_displacement_share()
    assert float(shares.max()) <= 0.02 + 1e-6 and float(shares.min()) > 0.01
    warped, protected = crops + result.warp_change, crops + result.change
    torch.testing.assert_close(protected - warped, result.additive, atol=1e-6, rtol=0)
    assert protected.min() >= 0 and protected.max() <= 1
    inside = mask[:, 0] > 0.999
    after_the_warp = delta_e2000(warped, protected)[inside]
    against_the_clean_crop = delta_e2000(crops, protected)[inside]
    assert float(after_the_warp.max()) <= cap * 1.02             # the additive part: within its cap
    assert float(after_the_warp.max()) > 0.5 * cap               # and it was spent
    assert float(against_the_clean_crop.max()) > 1.5 * cap       # the warp is not charged to it
    with pytest.raises(ValueError):
        LowKeyAttack([recognizer], warp_px=0.5, warp_face_share=0.01)


@pytest.fixture(scope="module")
def real_face(faces_dir):
    """(working crop (1, 3, 230, 230), its landmarks, feathering mask, face width), the first
    lfw-dev identity's first photo, cropped as protect() does at the standard working size."""
    from lowkey_engine.faces.detect import load_detector
    from lowkey_engine.images.decode import decode_image
    from lowkey_engine.settings import ProtectSettings

    folder = sorted(p for p in (faces_dir / "lfw-dev").iterdir() if p.is_dir())[0]
    pixels = decode_image(sorted(folder.iterdir())[0].read_bytes()).pixels
    face = load_detector("cpu").detect(pixels)[0]
    settings = ProtectSettings()
    size = round(settings.working_face_px * settings.crop_margin)
    boxes = torch.tensor([[float(v) for v in face.box]])
    windows, crops, landmarks, masks = working_crops(
        pixels, boxes, torch.tensor([face.landmarks], dtype=torch.float32),
        margin=settings.crop_margin, working_size=size, feather=settings.feather)
    return crops, landmarks, masks, widths_in_crops(boxes, windows, size)


def test_on_a_real_face_geometry_lowers_the_surrogates_similarity_beyond_the_additive_change(real_face):
    from lowkey_engine.faces.recognizers import load_recognizer

    crops, landmarks, mask, widths = real_face
    recognizer = load_recognizer("mfn-expo")
    knobs = dict(steps=6, robust=False, views=1)               # the same additive budget for both

    def similarity(attack: LowKeyAttack) -> float:
        change = attack(crops, landmarks, mask, face_widths=widths)
        with torch.no_grad():
            return float((recognizer.embed(crops, landmarks) * recognizer.embed(crops + change, landmarks)).sum())

    additive_only = similarity(LowKeyAttack([recognizer], **knobs))
    with_geometry = similarity(LowKeyAttack([recognizer], **knobs, warp_face_share=0.01))
    assert with_geometry < additive_only - 0.03, (with_geometry, additive_only)
