"""JPEG quantisation tables: the standard's example tables, libjpeg's quality scaling, and the
quality a file was saved at, read back from its tables.

The protected copy of a JPEG is saved at the quality the photo came with (within bounds), so it is
no larger than it needs to be; the attack's differentiable JPEG uses the same scaled tables.
Tables are 64 values in natural (row-major) order, as Pillow's `Image.quantization` gives them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

#: The JPEG standard's example quantisation tables (ITU T.81, Annex K), luminance and chrominance.
STANDARD_LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
STANDARD_CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32),
)
QUALITY_RANGE = range(1, 101)


def scaled_tables(quality: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """libjpeg's (and Pillow's) tables for `quality` 1-100: (luma, chroma), 64 values each."""
    quality = min(100, max(1, int(quality)))
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return tuple(tuple(min(255, max(1, math.floor((value * scale + 50) / 100))) for value in base)
                 for base in (STANDARD_LUMA_TABLE, STANDARD_CHROMA_TABLE))


def estimate_quality(tables: Mapping[int, Sequence[int]]) -> int | None:
    """The libjpeg quality whose tables are nearest to a file's (`Image.quantization`: table id ->
    64 values), by mean absolute log ratio over the luma table and, when present, the first chroma
    table; exact for files libjpeg or Pillow wrote, the nearest equivalent for a camera's or an
    editor's own tables. None when the file carries no usable 64-value table."""
    luma = tables.get(0)
    if luma is None or len(luma) != 64 or min(luma) < 1:
        return None
    chroma = tables.get(1)
    chroma = chroma if chroma is not None and len(chroma) == 64 and min(chroma) >= 1 else None

    def distance(quality: int) -> float:
        reference_luma, reference_chroma = scaled_tables(quality)
        pairs = list(zip(luma, reference_luma)) + (list(zip(chroma, reference_chroma)) if chroma else [])
        return sum(abs(math.log(a / b)) for a, b in pairs) / len(pairs)

    return min(QUALITY_RANGE, key=lambda q: (distance(q), -q))
