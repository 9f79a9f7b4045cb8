"""Decode stage: photo bytes (or a file, or a PIL image) -> upright RGB float pixels.

Reads the formats `formats.protected_formats()` lists: JPEG (including MPO: the primary image),
PNG, WebP, HEIC/HEIF (through pillow-heif, without registering it in Pillow), AVIF, BMP, TIFF and
GIF, each with one frame; `encode` writes each back (GIF as PNG). The format is decided by the
file's bytes, never by its name. Everything else is refused with an `errors.ImageError` whose
`code` is the daemon's error code and whose message names the problem: empty, too many bytes,
too many pixels (checked from the header before any pixel is decoded), truncated, animated,
unsupported format, not an image.

Pillow global state: nothing is changed. `ImageFile.LOAD_TRUNCATED_IMAGES` is left as it is and
truncation is checked from the file's own structure (`containers.check_complete`) before
Pillow reads it, so a module that switches that flag on cannot make truncated photos pass.
The effective pixel cap is `min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS)`: above the latter Pillow
raises its own DecompressionBombError while reading the header, reported as `too_large` too.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from dataclasses import dataclass
from typing import Iterator, Union

import numpy as np
import torch
from PIL import ExifTags, Image, ImageCms, JpegImagePlugin, UnidentifiedImageError

from pillow_heif.as_plugin import HeifImageFile

from . import containers, formats, jpeg_tables
from .errors import (AnimatedImageError, BadImageError, ImageError, TooLargeError,
                           UnsupportedFormatError)

#: Formats decoded (`formats` names); the encoder writes each of them back (`ImageFormat.output`).
SUPPORTED_FORMATS = tuple(f.name for f in formats.protected_formats())
#: Pillow's name for multi-picture JPEGs (phones' depth maps, previews): read as JPEG, frame 0.
_MPO_FORMAT = "MPO"
#: Pillow's format names that differ from LowKey's.
_PILLOW_NAMES = {_MPO_FORMAT: "JPEG", "HEIF": "HEIC"}
#: Formats Pillow opens itself (HEIC goes through pillow-heif's HeifImageFile).
_PILLOW_OPENS = tuple(name for name in SUPPORTED_FORMATS if name != "HEIC")
MIME_TYPES = {name: formats.BY_NAME[name].mime for name in SUPPORTED_FORMATS}
#: Formats whose pixels are stored exactly (TIFF unless JPEG-compressed inside).
_LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "TIFF", "GIF"})
_TIFF_LOSSY_COMPRESSIONS = frozenset({"jpeg", "tiff_jpeg", "webp"})
#: Format assumed for a PIL image made in memory (no `format`): lossless, keeps alpha.
UNSAVED_IMAGE_FORMAT = "PNG"

#: Default pixel cap: 50 MP covers 48 MP phone photos; the float tensor is then 600 MB.
DEFAULT_MAX_PIXELS = 50_000_000
#: Default byte cap.
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

_ORIENTATION_TAG = ExifTags.Base.Orientation
_UPRIGHT = 1
_VALID_ORIENTATIONS = range(1, 9)
#: Chroma subsampling codes Pillow reads and writes: 4:4:4, 4:2:2, 4:2:0.
_PILLOW_SUBSAMPLINGS = (0, 1, 2)
_MAX_8BIT = 255.0
_MAX_16BIT = 65535.0
#: Greyscale modes read as 16-bit; "I" (32-bit int) is how older Pillow read 16-bit grey PNGs.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_GREY_MODES = frozenset({"1", "L", "LA", "La", *_SIXTEEN_BIT_MODES})
#: ICC header: the profile's data colour space, bytes 16-19 ("RGB ", "GRAY", "CMYK"...).
_ICC_COLOUR_SPACE = slice(16, 20)

#: What Pillow raises on malformed files (besides its own UnidentifiedImageError, an OSError);
#: RuntimeError is how Pillow's AVIF plugin and pillow-heif report libavif/libheif decode failures,
#: TypeError how Pillow's TIFF reader reports a file without its dimension tags.
_PILLOW_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError,
                         KeyError, RuntimeError, TypeError)

ImageSource = Union[bytes, bytearray, memoryview, str, os.PathLike, Image.Image]


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A decoded photo plus what encode needs to write it back in kind.

    pixels:  (3, H, W) float32 RGB in [0, 1], upright (EXIF orientation applied).
    alpha:   (1, H, W) float32 in [0, 1], upright, or None when the source has no transparency.
    format:  the source's format, one of SUPPORTED_FORMATS (MPO counts as JPEG); mime: its MIME type.
    icc_profile: the source's ICC profile when it describes these RGB pixels, else None (greyscale
             and CMYK profiles are dropped: the pixels are RGB, CMYK converted through it).
    exif:    the source's EXIF as read (privacy-relevant; encode writes none of it back).
    orientation: the EXIF orientation (1-8) that was applied to get upright pixels.
    source_mode: Pillow's mode before conversion ("RGB", "L", "P", "CMYK", "I;16"...).
    bits_per_channel: precision the pixels carry: 16 for 16-bit greyscale PNGs and TIFFs, else 8
             (Pillow reads 16-bit RGB(A) PNGs as 8-bit, pillow-heif 10-bit HEIC as 8-bit).
    lossless: the source was stored losslessly (PNG, BMP, GIF, TIFF unless JPEG inside,
             lossless WebP).
    dpi:     (x, y) dots per inch when the source states it, else None.
    source_bytes: the file as received (for lossless metadata stripping), None for PIL input.
    jpeg_quality: for a JPEG, the libjpeg quality its quantisation tables correspond to
             (`jpeg_tables.estimate_quality`), None when unreadable or not a JPEG.
    jpeg_subsampling: for a JPEG, its chroma subsampling as Pillow names it (0 = 4:4:4,
             1 = 4:2:2, 2 = 4:2:0), None when unknown or not a JPEG.
    """

    pixels: torch.Tensor
    alpha: torch.Tensor | None
    format: str
    mime: str
    icc_profile: bytes | None
    exif: Image.Exif
    orientation: int
    source_mode: str
    bits_per_channel: int
    lossless: bool
    dpi: tuple[float, float] | None
    source_bytes: bytes | None
    jpeg_quality: int | None = None
    jpeg_subsampling: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, upright."""
        return self.pixels.shape[2], self.pixels.shape[1]

    @property
    def is_greyscale(self) -> bool:
        """The source stored one grey channel (modes 1, L, LA, I;16...)."""
        return self.source_mode in _GREY_MODES


def decode_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> DecodedImage:
    """Decode a photo. source: file bytes, a path, or a PIL image (its `format` decides the output
    format; UNSAVED_IMAGE_FORMAT when None). Raises an ImageError subclass for what it refuses."""
    if isinstance(source, Image.Image):
        with _pillow_errors_as_image_errors(None):
            _check_header(source, max_pixels)
            return _decode_opened(source, None)
    data = _read_bytes(source, max_bytes)
    sniffed = containers.sniff_format(data)
    if sniffed in containers.STRUCTURED_FORMATS:  # before Pillow: name truncation as such
        containers.check_complete(data, sniffed)
    elif sniffed is not None and sniffed not in SUPPORTED_FORMATS:
        raise _unsupported(sniffed)
    with _pillow_errors_as_image_errors(data):
        with _open(data, sniffed) as image:
            _check_header(image, max_pixels)
            return _decode_opened(image, data)


def _open(data: bytes, sniffed: str | None) -> Image.Image:
    """The file opened lazily (header read, no pixels): by pillow-heif for HEIC, else by Pillow
    limited to the formats LowKey reads."""
    if sniffed == "HEIC":
        return HeifImageFile(io.BytesIO(data))
    return Image.open(io.BytesIO(data), formats=_PILLOW_OPENS)


@contextlib.contextmanager
def _pillow_errors_as_image_errors(data: bytes | None) -> Iterator[None]:
    """Turn what Pillow raises on malformed input into ImageErrors. data: the file, if any."""
    try:
        yield
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise _unidentified(data or b"") from None
    except Image.DecompressionBombError as error:
        raise TooLargeError(f"the image has too many pixels ({error})") from None
    except _PILLOW_DECODE_ERRORS as error:
        raise _damaged(data or b"", error) from None


def _read_bytes(source: bytes | bytearray | memoryview | str | os.PathLike,
                max_bytes: int) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            data = file.read(max_bytes + 1)
    else:
        data = bytes(source)
    if not data:
        raise BadImageError("the file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise TooLargeError(f"the file is larger than the limit of {max_bytes / 2**20:.1f} MiB")
    return data


def _supported_list() -> str:
    return ", ".join(SUPPORTED_FORMATS)


def _unidentified(data: bytes) -> BadImageError:
    sniffed = containers.sniff_format(data)
    if sniffed is None:
        return BadImageError(
            f"not an image LowKey can read (supported formats: {_supported_list()})")
    if sniffed in SUPPORTED_FORMATS:
        return BadImageError(f"damaged {sniffed} file: its header cannot be read")
    return _unsupported(sniffed)


def _unsupported(format_name: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"{format_name} images are not supported (supported formats: {_supported_list()})",
        format_name)


def _damaged(data: bytes, error: Exception) -> BadImageError:
    name = containers.sniff_format(data) or "image"
    return BadImageError(f"damaged {name} file: {error}")


def _format_name(image: Image.Image) -> str:
    """The source's format as `formats` names it: Pillow's name, MPO read as JPEG, HEIF as HEIC,
    UNSAVED_IMAGE_FORMAT for a PIL image made in memory."""
    if not image.format:
        return UNSAVED_IMAGE_FORMAT
    return _PILLOW_NAMES.get(image.format, image.format)


def _check_header(image: Image.Image, max_pixels: int) -> None:
    """Checks that need only the header: format, pixel count, frame count. Nothing is decoded."""
    format_name = _format_name(image)
    if format_name not in SUPPORTED_FORMATS:
        raise _unsupported(format_name)
    width, height = image.size
    if width * height > max_pixels:
        raise TooLargeError(
            f"the image is {width} x {height} pixels ({width * height / 1e6:.1f} MP); "
            f"the limit is {max_pixels / 1e6:.1f} MP")
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format != _MPO_FORMAT:
        kind = {"TIFF": "multi-page TIFF", "HEIC": "multi-image HEIC"}.get(
            format_name, f"animated {format_name}")
        raise AnimatedImageError(
            f"{kind} images ({frames} frames) are not supported: only the first frame would "
            "be protected and the others dropped")


def _decode_opened(image: Image.Image, data: bytes | None) -> DecodedImage:
    """Pixels and metadata of an image whose header passed `_check_header`. data: the file's
    bytes, None for a PIL image handed over directly."""
    format_name = _format_name(image)
    image.load()
    exif = _read_exif(image)
    orientation = exif.get(_ORIENTATION_TAG, _UPRIGHT)
    if orientation not in _VALID_ORIENTATIONS:
        orientation = _UPRIGHT
    icc_profile = image.info.get("icc_profile") or None
    stored, max_value, bits = _integer_channels(image, icc_profile)
    upright = _apply_orientation(stored, orientation).transpose(2, 0, 1)  # (C, H, W) view
    upright = np.require(upright, requirements=("C_CONTIGUOUS", "WRITEABLE"))
    channels = torch.from_numpy(upright).to(torch.float32).div_(max_value)
    if channels.shape[0] == 1:  # 16-bit grey
        rgb, alpha = channels.expand(3, -1, -1).contiguous(), None
    else:  # RGB or RGBA: leading slices of a contiguous tensor are contiguous, no copies
        rgb, alpha = channels[:3], (channels[3:] if channels.shape[0] == 4 else None)
    return DecodedImage(
        pixels=rgb,
        alpha=alpha,
        format=format_name,
        mime=MIME_TYPES[format_name],
        icc_profile=icc_profile if _icc_colour_space(icc_profile) == b"RGB " else None,
        exif=exif,
        orientation=orientation,
        source_mode=image.mode,
        bits_per_channel=bits,
        lossless=_is_lossless(image, format_name, data),
        dpi=_read_dpi(image),
        source_bytes=data,
        **_jpeg_encoding(image, format_name),
    )


def _jpeg_encoding(image: Image.Image, format_name: str) -> dict:
    """How a JPEG was encoded, as far as its header tells: quality and chroma subsampling."""
    if format_name != "JPEG":
        return {}
    sampling = JpegImagePlugin.get_sampling(image) if isinstance(image, JpegImagePlugin.JpegImageFile) else -1
    return {"jpeg_quality": jpeg_tables.estimate_quality(getattr(image, "quantization", None) or {}),
            "jpeg_subsampling": sampling if sampling in _PILLOW_SUBSAMPLINGS else None}


def _read_exif(image: Image.Image) -> Image.Exif:
    """The image's EXIF; an empty one when it is missing or unreadable (a broken EXIF block is
    not a reason to refuse a photo: its orientation is then taken as upright)."""
    try:
        return image.getexif()
    except _PILLOW_DECODE_ERRORS:
        return Image.Exif()


def _icc_colour_space(icc_profile: bytes | None) -> bytes | None:
    if not icc_profile or len(icc_profile) < _ICC_COLOUR_SPACE.stop:
        return None
    return icc_profile[_ICC_COLOUR_SPACE]


def _integer_channels(image: Image.Image, icc_profile: bytes | None
                      ) -> tuple[np.ndarray, float, int]:
    """Stored pixels as integers (H, W, C): C = 1 (16-bit grey), 3 (RGB) or 4 (RGBA); plus the
    value meaning 1.0 and the bits per channel. Converting to float is left to the caller, once."""
    if image.mode in _SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(image).astype(np.int32), 0, int(_MAX_16BIT))
        return grey[:, :, None], _MAX_16BIT, 16
    if image.mode == "CMYK":
        return _cmyk_to_rgb(image, icc_profile), _MAX_8BIT, 8
    converted = image.convert("RGBA" if image.has_transparency_data else "RGB")
    return np.asarray(converted), _MAX_8BIT, 8


def _cmyk_to_rgb(image: Image.Image, icc_profile: bytes | None) -> np.ndarray:
    """CMYK (Pillow has already undone Adobe's inverted storage) -> sRGB, through the embedded
    CMYK ICC profile when there is one, else Pillow's profile-less formula."""
    rgb = None
    if _icc_colour_space(icc_profile) == b"CMYK":
        try:
            rgb = ImageCms.profileToProfile(
                image, ImageCms.ImageCmsProfile(io.BytesIO(icc_profile)),
                ImageCms.createProfile("sRGB"), outputMode="RGB",
                renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                flags=ImageCms.Flags.BLACKPOINTCOMPENSATION)
        except (ImageCms.PyCMSError, OSError):
            rgb = None  # unusable profile: fall back to the formula
    if rgb is None:
        rgb = image.convert("RGB")
    return np.asarray(rgb)


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn (H, W, C) stored pixels upright for EXIF orientation 1-8 (views, no copies)."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return array.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


def _is_lossless(image: Image.Image, format_name: str, data: bytes | None) -> bool:
    if format_name == "TIFF":
        return image.info.get("compression") not in _TIFF_LOSSY_COMPRESSIONS
    if format_name in _LOSSLESS_FORMATS:
        return True
    if format_name == "WEBP" and data is not None:
        return containers.webp_is_lossless(data)
    return False


def _read_dpi(image: Image.Image) -> tuple[float, float] | None:
    dpi = image.info.get("dpi")
    try:
        x_dpi, y_dpi = (float(value) for value in dpi)
    except (TypeError, ValueError):
        return None
    return (x_dpi, y_dpi) if x_dpi > 0 and y_dpi > 0 else None
