"""Seed files for the image fuzzer, built from the real face photos, and header surgery on them.

Mutations start from small files (a 128-pixel copy decodes in about a millisecond, so 10,000 cases
take minutes) that still carry what real photos carry: an LFW JPEG and a progressive JPEG with an
ICC profile exactly as they are on disk, a portrait's own EXIF/XMP/Photoshop/Adobe/ICC segments
spliced onto a small re-encode of its pixels, and Pillow-made PNG and WebP variants (EXIF
orientation, ICC, palette with transparency, 16-bit grey, CMYK, lossy, lossless with alpha).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pillow_heif
from PIL import ExifTags, Image, ImageCms

#: Longest side of the pictures the seeds are made from, pixels.
SEED_SIDE = 128
#: Real files used as they are, or for their metadata (paths inside the faces folder).
PROGRESSIVE_PHOTO = Path("photos-deepface/person02/img12.jpg")   # 560x415, progressive, ICC
METADATA_PHOTO = Path("photos-group/obama.jpg")                  # EXIF, XMP, Photoshop, Adobe, ICC
WEBP_PHOTO = Path("photos-deepface/person03/img47.jpg")          # a WebP named .jpg
#: Frames in the animated seeds.
ANIMATION_FRAMES = 2

_JPEG_SOS = 0xDA
_JPEG_APPS = range(0xE0, 0xF0)
#: Start-of-frame markers (every coding process; C4 DHT, C8 JPG and CC DAC are not frames).
_JPEG_SOFS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR_DATA = slice(16, 29)      # width, height, bit depth... (13 bytes) after length and type
_PNG_IHDR_CRC = slice(29, 33)
_WEBP_FIRST_CHUNK = 12

#: Largest value each dimension field can hold.
MAX_PNG_DIMENSION = 2 ** 31 - 1
MAX_JPEG_DIMENSION = 2 ** 16 - 1
MAX_VP8_DIMENSION = 2 ** 14 - 1     # 14 bits; the top two bits of the field are the scale
MAX_VP8L_DIMENSION = 2 ** 14        # stored minus one in 14 bits
MAX_VP8X_DIMENSION = 2 ** 24        # stored minus one in 24 bits


@dataclass(frozen=True, repr=False)
class Seeds:
    """photos: files the decoder reads (mutations start from these and from `refused`);
    refused: real images it must refuse (animated, or a format it does not read)."""

    photos: dict[str, bytes]
    refused: dict[str, bytes]

    def __repr__(self) -> str:   # hypothesis prints the arguments of a failing test
        return f"Seeds(photos={sorted(self.photos)}, refused={sorted(self.refused)})"

    @property
    def all(self) -> dict[str, bytes]:
        return {**self.photos, **self.refused}


def default_faces_dir() -> Path:
    """The fetched photo sets (`lowkey datasets fetch`; data/faces in the checkout), as the tests use."""
    from lowkey_weights.datasets import faces_dir

    return faces_dir()


def build_seeds(faces_dir: Path) -> Seeds:
    """The seed files (deterministic for a given faces folder and Pillow version)."""
    lfw = sorted((faces_dir / "lfw-dev").glob("*/*.jpg"))
    if not lfw:
        raise FileNotFoundError(f"no LFW photos under {faces_dir / 'lfw-dev'}")
    lfw_bytes = lfw[0].read_bytes()
    picture = _small(Image.open(io.BytesIO(lfw_bytes)))
    portrait = (faces_dir / METADATA_PHOTO).read_bytes()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Artist] = "fuzz"
    with_alpha = picture.copy()
    with_alpha.putalpha(picture.convert("L"))
    photos = {
        "lfw.jpg": lfw_bytes,
        "progressive-icc.jpg": (faces_dir / PROGRESSIVE_PHOTO).read_bytes(),
        "portrait-metadata.jpg": splice_jpeg_metadata(
            portrait, encoded(_small(Image.open(io.BytesIO(portrait))), "JPEG", quality=85)),
        "exif-rotated.jpg": encoded(picture, "JPEG", exif=exif.tobytes(), icc_profile=icc,
                                    progressive=True),
        "cmyk.jpg": encoded(picture.convert("CMYK"), "JPEG"),
        "exif-icc.png": encoded(picture, "PNG", exif=exif.tobytes(), icc_profile=icc),
        "palette-transparent.png": encoded(
            picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG", transparency=0),
        "grey16.png": encoded(picture.convert("L").convert("I;16"), "PNG"),
        "lossy.webp": encoded(_small(Image.open(faces_dir / WEBP_PHOTO)), "WEBP", quality=80),
        "lossless-alpha.webp": encoded(with_alpha, "WEBP", lossless=True),
        "exif-icc.webp": encoded(picture, "WEBP", exif=exif.tobytes(), icc_profile=icc),
        "photo.heic": _heic(picture, exif.tobytes()),
        "photo.avif": encoded(picture, "AVIF", quality=80, exif=exif.tobytes()),
        "photo.gif": encoded(picture, "GIF"),
        "photo.bmp": encoded(picture, "BMP"),
        "alpha.tiff": encoded(with_alpha, "TIFF", compression="tiff_lzw"),
    }
    frames = [picture, picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)][:ANIMATION_FRAMES]
    refused = {
        "animated.webp": encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "animated.png": encoded(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "animated.gif": encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "pages.tiff": encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "photo.ico": encoded(picture, "ICO"),
    }
    return Seeds(photos, refused)


def _heic(image: Image.Image, exif: bytes) -> bytes:
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=80, exif=exif)
    return buffer.getvalue()


def encoded(image: Image.Image, format_name: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format_name, **options)
    return buffer.getvalue()


def _small(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    image.thumbnail((SEED_SIDE, SEED_SIDE))
    return image


# ---------------------------------------------------------------- JPEG structure (well-formed files)

def jpeg_header_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment between SOI and the first scan of a well-formed JPEG."""
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        segments.append((marker, pos, end))
        if marker == _JPEG_SOS:
            break
        pos = end
    return segments


def splice_jpeg_metadata(source: bytes, target: bytes) -> bytes:
    """`target` with its own APPn segments replaced by every APPn segment of `source`."""
    apps = [source[s:e] for marker, s, e in jpeg_header_segments(source) if marker in _JPEG_APPS]
    own = [(s, e) for marker, s, e in jpeg_header_segments(target) if marker in _JPEG_APPS]
    body_start = own[-1][1] if own else 2
    return target[:2] + b"".join(apps) + target[body_start:]


# ---------------------------------------------------------------- claimed dimensions

def claim_dimensions(data: bytes, width: int, height: int, *, fix_crc: bool = True
                     ) -> tuple[bytes, tuple[int, int]] | None:
    """`data` with its header(s) claiming width x height, and the dimensions actually written
    (clamped to what the field holds). PNG: IHDR, its CRC fixed unless fix_crc is False. JPEG:
    every start-of-frame segment. WebP: the VP8X canvas and the first VP8/VP8L bitstream header.
    None when the file has no such header."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":
        return _claim_png(data, width, height, fix_crc)
    if data.startswith(b"\xff\xd8"):
        return _claim_jpeg(data, width, height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _claim_webp(data, width, height)
    return None


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _claim_png(data: bytes, width: int, height: int, fix_crc: bool):
    width, height = (_clamp(v, 0, MAX_PNG_DIMENSION) for v in (width, height))
    out = bytearray(data)
    out[16:24] = struct.pack(">II", width, height)
    if fix_crc:
        out[_PNG_IHDR_CRC] = struct.pack(">I", zlib.crc32(bytes(out[12:_PNG_IHDR_DATA.stop])))
    return bytes(out), (width, height)


def _claim_jpeg(data: bytes, width: int, height: int):
    width, height = (_clamp(v, 0, MAX_JPEG_DIMENSION) for v in (width, height))
    out = bytearray(data)
    frames = [s for marker, s, _ in jpeg_header_segments(data) if marker in _JPEG_SOFS]
    for start in frames:   # FF Cn, length (2), precision (1), height (2), width (2)
        out[start + 5:start + 9] = struct.pack(">HH", height, width)
    return (bytes(out), (width, height)) if frames else None


def _claim_webp(data: bytes, width: int, height: int):
    out = bytearray(data)
    claimed = None
    pos = _WEBP_FIRST_CHUNK
    while pos + 8 <= len(data):
        fourcc, length = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        payload = pos + 8
        if fourcc == b"VP8X" and length >= 10:
            w, h = (_clamp(v, 1, MAX_VP8X_DIMENSION) for v in (width, height))
            out[payload + 4:payload + 10] = (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
            claimed = (w, h)
        elif fourcc == b"VP8 " and length >= 10:
            w, h = (_clamp(v, 0, MAX_VP8_DIMENSION) for v in (width, height))
            out[payload + 6:payload + 10] = struct.pack("<HH", w, h)   # scale bits left at 0
            return bytes(out), claimed or (w, h)
        elif fourcc == b"VP8L" and length >= 5:
            w, h = (_clamp(v, 1, MAX_VP8L_DIMENSION) for v in (width, height))
            bits = int.from_bytes(data[payload + 1:payload + 5], "little")
            bits = (bits & ~((1 << 28) - 1)) | (w - 1) | ((h - 1) << 14)
            out[payload + 1:payload + 5] = bits.to_bytes(4, "little")
            return bytes(out), claimed or (w, h)
        pos = payload + length + (length & 1)
    return (bytes(out), claimed) if claimed else None
