"""The protect pipeline and `lowkey protect`: faces changed, everything else as promised.

Most tests use a two-step attack (cheap settings): they check plumbing, formats and errors. One
test runs the real `fast` preset and checks that the attacked recognizers no longer see the same
face.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lowkey_engine.cli import main as lowkey
from lowkey_engine.images.decode import decode_image
from lowkey_engine.images.encode import encode_image
from lowkey_engine.faces.detect import load_detector
from lowkey_engine.protect import protect
from lowkey_engine.faces.recognizers import DEFAULT_ENSEMBLE, load_recognizer
from lowkey_engine.settings import ProtectSettings

CHEAP = ProtectSettings.from_preset("fast", steps=2, device="cpu")


@pytest.fixture(scope="module")
def portrait(faces_dir) -> bytes:
    return (faces_dir / "photos-group" / "obama.jpg").read_bytes()


@pytest.fixture(scope="module")
def lfw_photo(faces_dir) -> bytes:
    folder = sorted(p for p in (faces_dir / "lfw-dev").iterdir() if p.is_dir())[0]
    return sorted(folder.iterdir())[0].read_bytes()


def pixels_of(data: bytes) -> torch.Tensor:
    return decode_image(data).pixels


def test_faces_change_only_around_faces_and_format_is_kept(portrait):
    result = protect(portrait, CHEAP)
    decoded = decode_image(portrait)
    original, protected = decoded.pixels, pixels_of(result.data)
    assert result.format == "JPEG" and result.mime == "image/jpeg"
    assert protected.shape == original.shape
    assert result.face_count == 1
    assert (protected - original).abs().amax(0).gt(8 / 255).any()
    # against the same photo re-saved the same way, only the faces' surroundings differ: away
    # from them the JPEG blocks get the same pixels in, so the same pixels come out
    resaved = pixels_of(encode_image(original, decoded).data)
    changed = (protected - resaved).abs().amax(0) > 1 / 255
    x1, y1, x2, y2 = (int(v) for v in result.faces[0].box)
    margin = 2 * max(x2 - x1, y2 - y1)          # the crop window reaches beyond the box
    outside = changed.clone()
    outside[max(0, y1 - margin):y2 + margin, max(0, x1 - margin):x2 + margin] = False
    assert changed.any() and not outside.any()


def test_a_protected_jpeg_keeps_the_photos_own_quality_and_chroma_subsampling(faces_dir):
    # sample1.jpg was saved at quality 60 with 4:2:2 chroma: it comes back at the lowest quality
    # kept (75) with 4:2:2; obama.jpg (quality 92, 4:4:4) at 92 and 4:4:4
    for name, quality, sampling in (("sample1.jpg", 75, 1), ("obama.jpg", 92, 0)):
        source = (faces_dir / "photos-group" / name).read_bytes()
        result = protect(source, CHEAP.replace(steps=1))
        out = decode_image(result.data)
        assert (out.jpeg_quality, out.jpeg_subsampling) == (quality, sampling), name
    explicit = protect((faces_dir / "photos-group" / "obama.jpg").read_bytes(),
                       CHEAP.replace(steps=1, jpeg_output_quality=80))
    assert decode_image(explicit.data).jpeg_quality == 80


def test_fast_preset_moves_the_face_for_every_attacked_recognizer_within_its_colour_cap(lfw_photo):
    settings = ProtectSettings.from_preset("fast", device="cpu")
    result = protect(lfw_photo, settings)
    original, protected = pixels_of(lfw_photo), pixels_of(result.data)
    face = load_detector("cpu").detect(original)[0]
    landmarks = torch.as_tensor(face.landmarks, dtype=torch.float32)[None]
    for model_id in DEFAULT_ENSEMBLE:
        recognizer = load_recognizer(model_id)
        with torch.no_grad():
            cosine = float(recognizer.embed(original[None], landmarks) @ recognizer.embed(protected[None], landmarks).T)
        assert cosine < 0.5, f"{model_id}: protected face still at cosine {cosine:.2f}"
    assert result.faces[0].ssim > 0.9
    # the preset's visibility promise: the additive change's colour difference (the protected face
    # against the clean one warped) stays near its ΔE2000 cap (the cap holds per working-crop
    # pixel; resizing onto the photo adds a little); the warp keeps to its own budget
    assert result.faces[0].additive_delta_e_p95 <= 1.1 * settings.delta_e_cap
    assert 0.9 * settings.warp_face_share <= result.faces[0].warp_share <= settings.warp_face_share + 1e-4


def test_the_shading_penalty_leaves_less_shading_on_a_real_face(lfw_photo):
    penalised = protect(lfw_photo, ProtectSettings.from_preset("fast", device="cpu"))
    unpenalised = protect(lfw_photo, ProtectSettings.from_preset("fast", device="cpu", shading_weight=0.0))
    assert penalised.faces[0].shading < 0.75 * unpenalised.faces[0].shading
    assert penalised.faces[0].delta_e_p95 <= 1.1 * unpenalised.faces[0].delta_e_p95


def test_photo_without_faces_keeps_its_pixels_and_loses_its_metadata(tmp_path):
    gradient = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (120, 1))
    image = Image.fromarray(np.stack([gradient, gradient[::-1], gradient], axis=-1))
    exif = Image.Exif()
    exif[0x8825] = {2: (48.0, 51.0, 24.0)}          # GPSInfo: latitude
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif)
    result = protect(buffer.getvalue(), CHEAP)
    assert result.faces == ()
    assert torch.equal(pixels_of(result.data), pixels_of(buffer.getvalue()))
    assert not Image.open(io.BytesIO(result.data)).getexif()


def test_png_with_alpha_stays_png_with_the_same_alpha(portrait):
    rgba = Image.open(io.BytesIO(portrait)).convert("RGBA")
    alpha = np.full(rgba.size[::-1], 200, dtype=np.uint8)
    alpha[:10] = 0
    rgba.putalpha(Image.fromarray(alpha))
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    result = protect(buffer.getvalue(), CHEAP)
    out = Image.open(io.BytesIO(result.data))
    assert result.format == "PNG" and out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[..., 3], alpha)


def test_same_seed_gives_the_same_photo(portrait):
    assert protect(portrait, CHEAP).data == protect(portrait, CHEAP).data


def test_cli_writes_beside_inputs_reports_failures_and_goes_on(tmp_path, portrait, capsys):
    good = tmp_path / "me.jpg"
    good.write_bytes(portrait)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    status = lowkey(["protect", str(tmp_path), "--preset", "fast", "--device", "cpu", "-q",
                     "--seed", "1"] + [])
    captured = capsys.readouterr()
    assert status == 1                                    # one input failed
    assert "empty.jpg: error:" in captured.err
    assert (tmp_path / "me.lowkey.jpg").is_file()
    assert good.read_bytes() == portrait                  # the input is untouched
    assert "1 face(s) protected" in captured.out


def test_cli_protects_a_folder_in_batches_as_it_would_one_photo_at_a_time(tmp_path, faces_dir, capsys):
    album = tmp_path / "album"
    album.mkdir()
    for photo in ("sample1.jpg", "obama.jpg", "biden.jpg"):
        (album / photo).write_bytes((faces_dir / "photos-group" / photo).read_bytes())
    args = ["protect", str(album), "--preset", "fast", "--device", "cpu", "-q"]
    for budget, folder in (("8", "batched"), ("1", "alone")):
        assert lowkey(args + ["--face-budget", budget, "--out-dir", str(tmp_path / folder)]) == 0
    out = capsys.readouterr().out
    assert out.count("face(s) protected") == 6
    for photo in ("sample1.jpg", "obama.jpg", "biden.jpg"):
        batched, alone = (pixels_of((tmp_path / folder / photo).read_bytes()) for folder in ("batched", "alone"))
        assert (batched - alone).abs().mean() < 1 / 255      # as alone, up to float noise (test_batching.py)
    assert lowkey(["protect", str(album), "--face-budget", "-1", "-q"]) == 2


def test_cli_refuses_to_overwrite_an_input(tmp_path, portrait, capsys):
    photo = tmp_path / "me.jpg"
    photo.write_bytes(portrait)
    assert lowkey(["protect", str(photo), "-o", str(photo), "--preset", "fast", "-q"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert photo.read_bytes() == portrait


def test_a_large_face_gets_the_smaller_budget_its_size_calls_for(faces_dir):
    # a portrait's face is several hundred pixels wide: with the whole budget reserved for faces up
    # to a quarter of its width (exponent 1), its additive change's ΔE2000 shrinks to about a quarter
    source = (faces_dir / "photos-deepface" / "person01" / "img2.jpg").read_bytes()
    settings = ProtectSettings.from_preset("fast", steps=4, device="cpu", warp_face_share=0.0)
    whole_photo = protect(source, settings)
    whole = whole_photo.faces[0]
    face_px = whole.box[2] - whole.box[0]
    assert face_px > 200
    shrunk = protect(source, settings.replace(full_budget_face_px=face_px / 4, budget_size_exponent=1.0)).faces[0]
    assert whole.additive_delta_e_p95 > 0.8 * settings.delta_e_cap
    assert shrunk.additive_delta_e_p95 <= 0.3 * 1.1 * settings.delta_e_cap
    assert shrunk.additive_delta_e_p95 > 0.1 * settings.delta_e_cap        # still a change, not none
    # a face below the reference keeps the whole budget, bit for bit
    untouched = protect(source, settings.replace(full_budget_face_px=2 * face_px))
    assert untouched.data == whole_photo.data


def test_a_budget_map_reaches_only_faces_as_wide_as_its_threshold(faces_dir):
    source = (faces_dir / "photos-deepface" / "person01" / "img2.jpg").read_bytes()
    settings = CHEAP.replace(budget_map="regions")
    mapped = protect(source, settings)
    assert (mapped.stats["jnd_faces"], mapped.stats["jnd_small_faces"]) == (1, 0)
    face_px = mapped.faces[0].box[2] - mapped.faces[0].box[0]
    skipped = protect(source, settings.replace(budget_map_min_face_px=face_px + 1))
    assert (skipped.stats["jnd_faces"], skipped.stats["jnd_small_faces"]) == (0, 1)
    assert skipped.data == protect(source, CHEAP).data          # the uniform budget, bit for bit
    assert mapped.data != skipped.data
