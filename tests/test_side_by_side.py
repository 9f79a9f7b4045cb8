"""`lowkey side-by-side`: the sheet and the blind pairs show the real original and the real
protected photo, in the order key.json says."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from lowkey_engine.cli import main as lowkey
from lowkey_engine.images.decode import decode_image
from lowkey_engine.settings import ProtectSettings
from lowkey_engine.evaluation.side_by_side import (FACE_CELL, PAIR_GAP, compare, face_crop, write_blind_pairs,
                                                   write_sheet)

CHEAP = ProtectSettings.from_preset("fast", steps=2, device="cpu")


def _pixels(image: Image.Image) -> torch.Tensor:
    return decode_image(image).pixels


def test_blind_pairs_hold_the_original_on_one_side_and_the_protected_photo_on_the_other(tmp_path, faces_dir):
    photos = sorted((faces_dir / "lfw-dev").glob("*/*.jpg"))[:3]
    comparisons = [compare(p, CHEAP) for p in photos]
    key = write_blind_pairs(comparisons, tmp_path / "pairs", seed=1)
    assert json.loads((tmp_path / "pairs" / "key.json").read_text()) == key
    assert set(key.values()) <= {"left", "right"} and len(key) == 3
    for comparison in comparisons:
        name = photos[comparisons.index(comparison)].stem + ".png"
        pair = _pixels(Image.open(tmp_path / "pairs" / name))
        _, height, width = comparison.original.shape
        assert pair.shape == (3, height, 2 * width + PAIR_GAP)
        left, right = pair[..., :width], pair[..., width + PAIR_GAP:]
        protected, original = (left, right) if key[name] == "left" else (right, left)
        assert torch.equal(original, comparison.original)
        assert torch.equal(protected, comparison.protected)
        assert not torch.equal(protected, original)


def test_sheet_shows_the_central_face_enlarged_and_the_cli_writes_it(tmp_path, faces_dir):
    photo = faces_dir / "photos-group" / "obama.jpg"
    comparison = compare(photo, CHEAP)
    original_face, protected_face = face_crop(comparison)
    x1, y1, x2, y2 = comparison.faces[0].box
    assert original_face.shape[-1] < comparison.original.shape[-1]          # a crop, not the photo
    assert original_face.shape[-1] >= max(x2 - x1, y2 - y1)                   # the whole face fits
    write_sheet([comparison], "fast", tmp_path / "sheet.png", amplify=10)
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.width == 3 * FACE_CELL and sheet.height > FACE_CELL

    status = lowkey(["side-by-side", str(photo), "--preset", "fast", "--device", "cpu",
                     "--out", str(tmp_path / "cli.png"), "--blind-dir", str(tmp_path / "cli-pairs")])
    assert status == 0 and (tmp_path / "cli.png").is_file() and (tmp_path / "cli-pairs" / "key.json").is_file()
    assert lowkey(["side-by-side", str(photo)]) == 2                         # nowhere to write


def test_side_by_side_reports_a_bad_photo_and_goes_on(tmp_path, faces_dir, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    good = sorted((faces_dir / "lfw-dev").glob("*/*.jpg"))[0]
    status = lowkey(["side-by-side", str(bad), str(good), "--preset", "fast", "--device", "cpu",
                     "--set", "steps=1", "--set", "seed=3", "--blind-dir", str(tmp_path / "pairs")])
    assert status == 1
    assert "bad.jpg: error" in capsys.readouterr().err
    assert (tmp_path / "pairs" / (good.stem + ".png")).is_file()


def test_side_by_side_refuses_a_setting_that_does_not_exist(tmp_path, capsys):
    with pytest.raises(SystemExit):
        lowkey(["side-by-side", "x.jpg", "--out", str(tmp_path / "s.png"), "--set", "no_such_knob=1"])
    assert "--set takes FIELD=VALUE" in capsys.readouterr().err
