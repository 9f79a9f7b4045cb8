"""What a social site does to an uploaded photo: downscaling and JPEG re-encoding, applied with
Pillow to the encoded bytes, as `lowkey eval` applies them to gallery photos before recognition.

    parse_transform("half+jpeg75").apply(photo_bytes)   # half size, then JPEG quality 75
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from PIL import Image, ImageOps


@dataclass(frozen=True)
class UploadTransform:
    """Downscale (by `scale`, and/or so the longest side is at most `max_side`) then re-encode as
    JPEG at `jpeg_quality`; real Pillow operations on the encoded bytes. Without a JPEG step a
    resized photo is stored as PNG (lossless), so only the resize acts."""

    name: str
    scale: float | None = None
    max_side: int | None = None
    jpeg_quality: int | None = None

    @property
    def is_identity(self) -> bool:
        return self.scale is None and self.max_side is None and self.jpeg_quality is None

    def apply(self, data: bytes) -> bytes:
        if self.is_identity:
            return data
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        width, height = image.size
        factor = 1.0 if self.scale is None else self.scale
        if self.max_side is not None and max(width, height) * factor > self.max_side:
            factor = self.max_side / max(width, height)
        resized = factor < 1.0
        if resized:
            image = image.resize((max(1, round(width * factor)), max(1, round(height * factor))),
                                 Image.Resampling.LANCZOS)
        if self.jpeg_quality is None and not resized:
            return data
        out = io.BytesIO()
        if self.jpeg_quality is not None:
            image.save(out, "JPEG", quality=self.jpeg_quality)
        else:
            image.save(out, "PNG")
        return out.getvalue()


_TOKEN = re.compile(r"^(?:(none)|jpeg(\d{1,3})|(half)|max(\d+)|scale(0?\.\d+|1(?:\.0*)?))$")


def parse_transform(name: str) -> UploadTransform:
    """'none', or '+'-joined steps: 'jpegQ' (quality 1-100), 'half', 'maxN' (longest side N px),
    'scaleF' (0 < F <= 1). E.g. 'half+jpeg75'. Resizing always happens before JPEG."""
    scale = max_side = quality = None
    for token in name.lower().split("+"):
        match = _TOKEN.match(token.strip())
        if not match:
            raise ValueError(f"unknown upload transform {token!r} in {name!r}: "
                             "use none, jpegQ, half, maxN, scaleF joined by '+'")
        none, jpeg, half, max_n, scale_f = match.groups()
        if jpeg:
            quality = int(jpeg)
            if not 1 <= quality <= 100:
                raise ValueError(f"JPEG quality must be 1-100, got {quality}")
        elif half:
            scale = 0.5 if scale is None else scale * 0.5
        elif max_n:
            max_side = int(max_n)
        elif scale_f:
            scale = float(scale_f) if scale is None else scale * float(scale_f)
    return UploadTransform(name, scale, max_side, quality)
