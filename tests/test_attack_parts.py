"""Building blocks of the attack: crops and feathering, differentiable transforms, the attack's
constraints. Known answers on small synthetic inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lowkey_engine.attack.lowkey import LowKeyAttack, PhotoFaces, _PhotoBatch
from lowkey_engine.attack.crops import CropWindow, apply_changes, crop_window, extract, feather_mask, working_crops
from lowkey_engine.attack.transforms import downscale_and_back, gaussian_blur, jpeg_approx


def test_feather_mask_is_one_inside_and_fades_to_zero_at_the_edge():
    mask = feather_mask(100, 0.2)[0]
    assert mask[50, 50] == 1.0 and mask[25:75, 25:75].min() == 1.0
    assert mask[0].max() < 0.01 and mask[:, 0].max() < 0.01
    torch.testing.assert_close(mask, mask.flip(0))
    torch.testing.assert_close(mask, mask.T)


def test_crop_window_is_square_and_centred_on_the_box():
    window = crop_window((100, 50, 140, 110), margin=2.0)       # box 40 x 60
    assert window.side == 120
    assert (window.x0 + window.side / 2, window.y0 + window.side / 2) == (120, 80)
    corners = window.to_working(torch.tensor([[window.x0, window.y0], [window.x0 + window.side, window.y0]],
                                             dtype=torch.float32), 240)
    torch.testing.assert_close(corners, torch.tensor([[0.0, 0.0], [240.0, 0.0]]))


def test_overhanging_window_is_padded_and_only_the_photo_part_is_valid():
    image = torch.rand(3, 30, 40)
    crop, valid = extract(image, CropWindow(x0=-5, y0=20, side=20))
    assert crop.shape == (3, 20, 20)
    torch.testing.assert_close(crop[:, :10, 5:], image[:, 20:30, 0:15])
    assert valid[:, :10, 5:].min() == 1 and valid[:, 10:].max() == 0 and valid[:, :, :5].max() == 0


def test_changes_land_inside_their_window_and_zero_change_is_a_no_op():
    image = torch.rand(3, 64, 80) * 0.8                                   # + 0.1 never clamps
    windows = [CropWindow(10, 10, 20), CropWindow(70, 50, 20)]            # the second overhangs
    assert torch.equal(apply_changes(image, windows, torch.zeros(2, 3, 32, 32)), image)
    out = apply_changes(image, windows, torch.full((2, 3, 32, 32), 0.1))
    moved = (out - image).abs().amax(0) > 1e-6
    expected = torch.zeros(64, 80, dtype=torch.bool)
    expected[10:30, 10:30] = True
    expected[50:64, 70:80] = True
    assert torch.equal(moved, expected)


def test_working_crops_map_landmarks_into_the_crop():
    image = torch.rand(3, 200, 300)
    boxes = torch.tensor([[100.0, 50.0, 160.0, 120.0]])
    landmarks = torch.tensor([[[115.0, 75.0], [145.0, 75.0], [130.0, 90.0], [118.0, 105.0], [142.0, 105.0]]])
    windows, crops, points, masks = working_crops(image, boxes, landmarks, margin=1.5, working_size=64,
                                                  feather=0.1)
    assert crops.shape == (1, 3, 64, 64) and masks.shape == (1, 1, 64, 64)
    scale = 64 / windows[0].side
    expected = (landmarks - torch.tensor([windows[0].x0, windows[0].y0])) * scale
    torch.testing.assert_close(points, expected)


@pytest.mark.parametrize("quality", [60, 75, 90])
def test_jpeg_approximation_is_close_to_real_jpeg(faces_dir, quality):
    photo = Image.open(faces_dir / "photos-group" / "obama.jpg").convert("RGB").resize((160, 120))
    x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)[None].float() / 255
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=quality)
    real = torch.from_numpy(np.asarray(Image.open(buffer)).copy()).permute(2, 0, 1)[None].float() / 255
    approx = jpeg_approx(x, quality)
    assert approx.shape == x.shape
    # much closer to what libjpeg does than to the untouched photo's distance from it
    assert (approx - real).abs().mean() < 0.6 * (x - real).abs().mean() + 1 / 255


def test_jpeg_approximation_passes_gradients_and_lower_quality_loses_more():
    x = torch.rand(1, 3, 32, 48, requires_grad=True)
    jpeg_approx(x, 75).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        assert (jpeg_approx(x, 30) - x).abs().mean() > (jpeg_approx(x, 95) - x).abs().mean()


def test_blur_and_downscale_keep_flat_images_flat():
    flat = torch.full((2, 3, 40, 40), 0.3)
    torch.testing.assert_close(gaussian_blur(flat), flat)
    torch.testing.assert_close(downscale_and_back(flat, 0.5), flat)


def test_attack_keeps_its_budget_and_the_pixel_range_and_moves_the_embedding(synthetic_attack_inputs):
    recognizer, crops, landmarks, mask = synthetic_attack_inputs
    attack = LowKeyAttack([recognizer], steps=3, step_size=0.01, epsilon=0.02, penalty_weight=0.0)
    change = attack(crops, landmarks, mask)
    assert change.abs().max() <= 0.02 + 1e-6
    protected = crops + change
    assert protected.min() >= 0 and protected.max() <= 1
    with torch.no_grad():
        before, after = recognizer.embed(crops, landmarks), recognizer.embed(protected, landmarks)
    assert ((before * after).sum(1) < 0.99).all()
    assert torch.equal(change, attack(crops, landmarks, mask))          # same seed, same result


def test_steps_shrink_along_a_half_cosine_from_step_size_to_its_decayed_share(synthetic_attack_inputs):
    recognizer = synthetic_attack_inputs[0]
    attack = LowKeyAttack([recognizer], steps=5, step_size=0.01, step_decay=0.1)
    sizes = [attack.step_size_at(step) for step in range(5)]
    assert sizes[0] == pytest.approx(0.01) and sizes[-1] == pytest.approx(0.001)
    assert sizes[2] == pytest.approx(0.0055)                               # half way: the mean of the two
    assert all(a > b for a, b in zip(sizes, sizes[1:]))
    constant = LowKeyAttack([recognizer], steps=5, step_size=0.01, step_decay=1.0)
    assert [constant.step_size_at(step) for step in range(5)] == pytest.approx([0.01] * 5)


def test_the_distance_is_averaged_over_members_so_adding_one_keeps_the_penalty_balance(synthetic_attack_inputs):
    # The same recognizer twice is the same objective as once: the penalty's hold does not change
    # with the ensemble's size.
    recognizer, crops, landmarks, mask = synthetic_attack_inputs
    knobs = dict(steps=3, step_size=0.01, epsilon=0.02, penalty_weight=50.0)
    once = LowKeyAttack([recognizer], **knobs)(crops, landmarks, mask)
    twice = LowKeyAttack([recognizer, recognizer], **knobs)(crops, landmarks, mask)
    torch.testing.assert_close(once, twice, atol=1e-6, rtol=0)


def test_several_views_in_one_batch_are_the_mean_of_the_views_one_at_a_time(synthetic_attack_inputs):
    recognizer, crops, landmarks, _ = synthetic_attack_inputs
    attack = LowKeyAttack([recognizer], views=3, shift_px=2.0)
    generator = torch.Generator().manual_seed(5)
    views = torch.cat([crops + 0.01 * k for k in range(3)])
    jittered = torch.cat([attack._jitter_landmarks(landmarks, generator) for _ in range(3)])
    with torch.no_grad():
        clean = [recognizer.embed(crops, landmarks)]
        batched = attack._embedding_distance(views, jittered, clean, _PhotoBatch(0, [2], [None]), [[0]])
        separate = torch.stack([attack._embedding_distance(views[2 * k:2 * k + 2], jittered[2 * k:2 * k + 2],
                                                           clean, _PhotoBatch(0, [2], [None]), [[0]])
                                for k in range(3)]).mean(0)
    torch.testing.assert_close(batched, separate, atol=1e-5, rtol=1e-5)


def test_a_stochastic_ensemble_draws_members_per_step_and_is_repeatable(synthetic_attack_inputs):
    recognizer = synthetic_attack_inputs[0]
    attack = LowKeyAttack([recognizer] * 4, members_per_step=2)
    generator = torch.Generator().manual_seed(0)
    draws = [attack._members(generator) for _ in range(200)]
    assert all(len(d) == 2 and len(set(d)) == 2 for d in draws)
    counts = torch.bincount(torch.tensor(draws).flatten(), minlength=4)
    assert counts.min() > 60                                  # every member gets its turn (100 expected)
    again = torch.Generator().manual_seed(0)
    assert [attack._members(again) for _ in range(200)] == draws
    assert LowKeyAttack([recognizer] * 4)._members(generator) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        LowKeyAttack([recognizer], views=0)


def test_member_focus_moves_the_ensemble_distance_from_the_mean_to_the_smallest():
    from lowkey_engine.attack.lowkey import combine_members

    distances = torch.tensor([[0.4, 2.0], [1.6, 2.0]])          # two members, two faces
    torch.testing.assert_close(combine_members(distances, None), torch.tensor([1.0, 2.0]))
    sharp = combine_members(distances, 0.01)
    assert abs(float(sharp[0]) - 0.4) < 0.01 and abs(float(sharp[1]) - 2.0) < 1e-4
    soft = combine_members(distances, 100.0)
    assert abs(float(soft[0]) - 1.0) < 0.01
    assert 0.4 < float(combine_members(distances, 0.5)[0]) < 1.0


def test_a_smooth_warp_moves_pixels_by_at_most_its_limit_and_not_at_the_edge():
    from lowkey_engine.attack.warp import SmoothWarp

    warp = SmoothWarp(max_px=1.0, grid=4)
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()    # x ramp
    mask = feather_mask(64, 0.2)[None]
    field = warp.project(torch.full((1, 2, 4, 4), 5.0))                       # clamped to 1 px
    assert field.max() == 1.0
    moved = warp.apply(ramp, field, mask)
    # a 1-pixel shift of a ramp with a step of 1/63 per pixel, faded out towards the edge
    shift = (moved - ramp)[0, 0] * 63
    assert abs(float(shift[32, 32]) - 1.0) < 1e-3 and float(shift.max()) <= 1.0 + 1e-3
    assert float(shift[:, 0].abs().max()) < 0.01 and float(shift[0].abs().max()) < 0.01
    torch.testing.assert_close(warp.apply(ramp, warp.zeros(ramp), mask), ramp)


def test_an_attack_with_a_warp_keeps_the_pixel_range_and_moves_the_embedding(synthetic_attack_inputs):
    recognizer, crops, landmarks, mask = synthetic_attack_inputs
    attack = LowKeyAttack([recognizer], steps=3, step_size=0.004, epsilon=0.004, penalty_weight=0.0,
                          warp_px=1.0, warp_grid=6)
    change = attack(crops, landmarks, mask)
    protected = crops + change
    assert protected.min() >= 0 and protected.max() <= 1
    # more than the additive budget alone allows: the warp moved pixels too
    assert float(change.abs().max()) > 0.004 + 1e-3
    additive_only = LowKeyAttack([recognizer], steps=3, step_size=0.004, epsilon=0.004, penalty_weight=0.0)
    plain_change = additive_only(crops, landmarks, mask)
    with torch.no_grad():
        clean = recognizer.embed(crops, landmarks)
        warped = (clean * recognizer.embed(protected, landmarks)).sum(1)
        plain = (clean * recognizer.embed(crops + plain_change, landmarks)).sum(1)
    assert (warped < plain).all()


class CountingRecognizer:
    """A recognizer that records how many faces each embed call gets."""

    def __init__(self, recognizer):
        self.recognizer, self.batches = recognizer, []

    def embed(self, images, landmarks):
        self.batches.append(images.shape[0])
        return self.recognizer.embed(images, landmarks)


def test_smoothing_views_at_random_halves_the_surrogate_passes_at_the_same_scale(synthetic_attack_inputs):
    recognizer, crops, landmarks, mask = synthetic_attack_inputs
    faces = crops.shape[0]
    for every_view, per_step in ((True, 2 * 2 * faces), (False, 2 * faces)):
        counting = CountingRecognizer(recognizer)
        LowKeyAttack([counting], steps=2, views=2, smooth_every_view=every_view)(crops, landmarks, mask)
        assert counting.batches == [faces, per_step, per_step]          # clean embeddings, then 2 steps
    # one unsmoothed view counts twice: the same scale as a view plus its smoothed copy that are alike
    attack = LowKeyAttack([recognizer], smooth_every_view=False)
    with torch.no_grad():
        clean = [recognizer.embed(crops, landmarks)]
        moved = crops.flip(-1)
        single = attack._embedding_distance(moved, landmarks, clean, _PhotoBatch(0, [faces], [None]), [[0]])
        squared = (recognizer.embed(moved, landmarks) - clean[0]).pow(2).sum(1)
    torch.testing.assert_close(single, 2 * squared)


class PooledPixels:
    """A stand-in recognizer whose every operation is per face (pooling, normalising), so its
    embeddings and gradients are bit for bit the same whatever else is in its batch: what is left
    to differ between a photo attacked alone and in a batch is the attack's own doing."""

    def embed(self, images, landmarks, augment=None):
        pooled = torch.nn.functional.avg_pool2d(images, 16)
        pooled = pooled if augment is None else augment(pooled)
        return torch.nn.functional.normalize(pooled.flatten(1) - 0.5, dim=1)


def stand_in_photos(*face_counts: int) -> list[PhotoFaces]:
    generator = torch.Generator().manual_seed(0)
    points = torch.tensor([[30.0, 40.0], [66.0, 40.0], [48.0, 55.0], [34.0, 70.0], [62.0, 70.0]])
    return [PhotoFaces(torch.rand(n, 3, 96, 96, generator=generator) * 0.6 + 0.2, points.expand(n, 5, 2).clone(),
                       feather_mask(96, 0.1)[None].expand(n, 1, 96, 96), torch.full((n,), 50.0))
            for n in face_counts]


@pytest.mark.parametrize("knobs", [{}, {"members_per_step": 1, "member_focus": 0.5}, {"diversity": "resize_pad"},
                                   {"warp_face_share": 0.02}, {"views": 2, "smooth_every_view": True}])
def test_a_photo_attacked_in_a_batch_is_attacked_as_it_is_alone(knobs):
    # Every random draw is the photo's own, every term of the objective is per face: with
    # recognizers that compute each face on its own, batched equals alone bit for bit.
    attack = LowKeyAttack([PooledPixels(), PooledPixels()], steps=4, **knobs)
    photos = stand_in_photos(2, 1, 3)
    together = attack.run_photos(photos)
    for photo, batched in zip(photos, together):
        alone = attack.run_photos([photo])[0]
        assert torch.equal(alone.change, batched.change) and torch.equal(alone.additive, batched.additive)
        assert batched.change.shape[0] == photo.count
    # ...and the draws are a photo's own: two different photos alone are changed differently
    first, second = (attack.run_photos([p])[0].change for p in stand_in_photos(1, 1))
    assert not torch.equal(first, second)


def test_a_photo_with_a_budget_map_and_one_without_share_a_batch_as_they_are_alone():
    # a large face's size factor (or a JND map) gives its photo a budget map; a photo of small
    # faces beside it has none and keeps its uniform budget
    attack = LowKeyAttack([PooledPixels()], steps=4)
    mapped, plain = stand_in_photos(2, 1)
    mapped.budget_scale = torch.full((2, 1, 96, 96), 0.5)
    together = attack.run_photos([mapped, plain])
    for photo, batched in zip((mapped, plain), together):
        assert torch.equal(attack.run_photos([photo])[0].change, batched.change)
    assert together[0].additive.abs().max() < together[1].additive.abs().max()


def test_a_photo_whose_progress_raises_leaves_the_batch_and_the_others_go_on():
    attack = LowKeyAttack([PooledPixels()], steps=4)
    photos = stand_in_photos(1, 2, 1)
    seen = []

    def stop_at_step_two(stage, done, total):
        seen.append(done)
        if done == 2:
            raise RuntimeError("cancelled")

    photos[1].progress = stop_at_step_two
    outcomes = attack.run_photos(photos)
    assert isinstance(outcomes[1], RuntimeError) and seen == [1, 2]
    for photo, outcome in zip((photos[0], photos[2]), (outcomes[0], outcomes[2])):
        torch.testing.assert_close(outcome.change, attack.run_photos([photo])[0].change, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="cancelled"):
        attack.run(photos[1].crops, photos[1].landmarks, photos[1].mask, progress=stop_at_step_two)


def test_the_identity_centre_pushes_album_photos_of_one_person_from_their_common_centre():
    attack = LowKeyAttack([PooledPixels()], steps=3, identity_centre=True, identity_link_cosine=0.9)
    first, other = stand_in_photos(1, 1)
    again = PhotoFaces(first.crops + 0.01 * torch.randn_like(first.crops), first.landmarks, first.mask,
                       first.face_widths)               # the same person in another photo of the album
    batch = _PhotoBatch(0, [1, 1, 1], [None] * 3)
    clean = [torch.cat([PooledPixels().embed(p.crops, p.landmarks) for p in (first, again, other)])]
    (centres,) = attack._identity_centres(clean, batch)
    expected = torch.nn.functional.normalize(clean[0][:2].mean(0), dim=0)
    torch.testing.assert_close(centres[:2], expected.expand(2, -1))
    assert torch.equal(centres[2], clean[0][2])                    # a person alone keeps their own
    together = attack.run_photos([first, again, other])
    alone = [attack.run_photos([p])[0] for p in (first, again, other)]
    assert not torch.equal(together[0].change, alone[0].change)    # the album changed the target...
    assert torch.equal(together[2].change, alone[2].change)        # ...only for that person's photos
    # two faces of one photo are never taken for one person
    (same_photo,) = attack._identity_centres(clean, _PhotoBatch(0, [2, 1], [None] * 2))
    assert torch.equal(same_photo[:2], clean[0][:2])
