"""Pictures to look at what protection does: original | protected | change amplified.

    lowkey side-by-side PHOTO... --preset standard --out sheet.png      # one sheet, faces enlarged
    lowkey side-by-side PHOTO... --blind-dir pairs/                      # full-size blind pairs

The sheet shows each photo's most central face (with margin) so the change is big enough to judge.
A blind pair is the original and the protected photo at full size, side by side in a random order
written to `key.json`: look first, then check whether you could tell.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .datasets import most_central
from .report import contact_sheet, to_image

#: Face crop for the sheet: this many times the face box's longer side, centred on the box.
FACE_CROP_MARGIN = 1.6
#: Side of each picture on the sheet, pixels.
FACE_CELL = 320
#: Gap between the two photos of a blind pair, pixels (white).
PAIR_GAP = 16


@dataclass(frozen=True)
class Comparison:
    """One photo before and after: (3, H, W) RGB in [0, 1], the face boxes, and the per-face
    numbers `protect` reported."""

    name: str
    original: torch.Tensor
    protected: torch.Tensor
    faces: tuple


def compare(path: Path, settings) -> Comparison:
    """Protect the photo at `path` and decode both versions (as delivered, after encoding)."""
    from ..images.decode import decode_image
    from ..protect import protect

    data = Path(path).read_bytes()
    result = protect(data, settings)
    return Comparison(Path(path).name, decode_image(data).pixels, decode_image(result.data).pixels, result.faces)


def face_crop(comparison: Comparison) -> tuple[torch.Tensor, torch.Tensor]:
    """The most central face's square surroundings in the original and the protected photo; the
    whole photos when no face was protected."""
    _, height, width = comparison.original.shape
    face = most_central(list(comparison.faces), width, height)
    if face is None:
        return comparison.original, comparison.protected
    x1, y1, x2, y2 = face.box
    side = FACE_CROP_MARGIN * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right, bottom = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    return (comparison.original[:, top:bottom, left:right], comparison.protected[:, top:bottom, left:right])


def write_sheet(comparisons: list[Comparison], preset: str, path: Path, amplify: float) -> None:
    """Rows = photos (their central face); columns = original, protected, change x `amplify`."""
    crops = [face_crop(c) for c in comparisons]
    samples = {"photos": [(c.name, original) for c, (original, _) in zip(comparisons, crops)],
               "protected": {preset: [protected for _, protected in crops]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(samples, path, amplify=amplify, cell=FACE_CELL)


def write_blind_pairs(comparisons: list[Comparison], folder: Path, seed: int = 0) -> dict[str, str]:
    """Each photo as `<name>.png`: original and protected at full size, side by side, in an order
    drawn with `seed`. Returns (and writes to key.json) which side is protected per file."""
    folder.mkdir(parents=True, exist_ok=True)
    draw = random.Random(seed)
    key = {}
    for comparison in comparisons:
        protected_left = draw.random() < 0.5
        left, right = ((comparison.protected, comparison.original) if protected_left
                       else (comparison.original, comparison.protected))
        _, height, width = left.shape
        pair = Image.new("RGB", (2 * width + PAIR_GAP, height), "white")
        pair.paste(to_image(left), (0, 0))
        pair.paste(to_image(right), (width + PAIR_GAP, 0))
        name = Path(comparison.name).stem + ".png"
        pair.save(folder / name)
        key[name] = "left" if protected_left else "right"
    (folder / "key.json").write_text(json.dumps(key, indent=2) + "\n")
    return key
