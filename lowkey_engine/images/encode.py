"""Encode stage: protected pixels -> file bytes in the source's format, without its metadata.

Format out = format in (`formats.ImageFormat.output`; GIF alone comes out as PNG, since a
256-colour palette cannot hold the protected pixels): JPEG stays JPEG at the quality it came
with (read from its quantisation tables, kept within JPEG_QUALITY_BOUNDS; DEFAULT_JPEG_QUALITY
when unreadable) and with its chroma subsampling, so the protected copy is about as large as the
photo; PNG stays PNG (alpha kept, bit-exact), WebP stays WebP (lossless when the source was,
else quality 95), HEIC stays HEIC (pillow-heif's HEVC encoder) and AVIF stays AVIF at
DEFAULT_HEIF_QUALITY, BMP stays BMP and TIFF stays TIFF (lossless: deflate). Same pixel size.
Orientation is baked into the pixels by decode, so no Orientation tag is written.
Metadata written: the ICC colour profile and the DPI (where the format stores one) only; no EXIF,
XMP, IPTC, comments or text chunks, so GPS positions, camera/lens serial numbers, maker notes,
thumbnails and user names never reach the output. Greyscale sources come back greyscale when the
pixels still are (16-bit greyscale PNGs as 16-bit).

`strip_metadata_only` is for photos the engine leaves unchanged (no face): it rewrites the source
file's segments/chunks without metadata instead of re-encoding (`containers.
strip_metadata`), so pixels stay bit-identical for JPEG as well as PNG and WebP, at no quality
cost. The one tag it keeps is Orientation (1-8), since those pixels are stored as they came.
Other formats are re-encoded from their decoded pixels (losslessly for BMP, TIFF and GIF -> PNG).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import pillow_heif
from PIL import Image

from . import containers, formats
from .decode import DecodedImage

#: JPEG quality when the source's own cannot be read (or for a PNG-less PIL image saved as JPEG).
DEFAULT_JPEG_QUALITY = 92
#: The source's own quality is kept within these bounds: below 75 a re-save visibly degrades the
#: photo (and the attack models re-encoding at 60-90 anyway); above 95 only the file grows.
JPEG_QUALITY_BOUNDS = (75, 95)
DEFAULT_WEBP_QUALITY = 95
#: HEIC and AVIF quality (0-100 in pillow-heif's and Pillow's scales): high, as for WebP, so the
#: protected change survives the re-encode.
DEFAULT_HEIF_QUALITY = 90
#: TIFF is written losslessly with this compression.
TIFF_COMPRESSION = "tiff_adobe_deflate"
#: Without the source's subsampling: from this JPEG quality up, chroma is stored at full
#: resolution (4:4:4); below, 4:2:0.
FULL_CHROMA_MIN_QUALITY = 90
_PILLOW_SUBSAMPLING_444, _PILLOW_SUBSAMPLING_420 = 0, 2
_FORMATS_WITH_ALPHA = frozenset({"PNG", "WEBP", "HEIC", "AVIF", "BMP", "TIFF"})
_FORMATS_WITH_DPI = frozenset({"JPEG", "PNG", "BMP", "TIFF"})
_FORMATS_WITH_16BIT_GREY = frozenset({"PNG", "TIFF"})
_LEVELS_8BIT = 255
_LEVELS_16BIT = 65535


@dataclass(frozen=True)
class EncodedImage:
    """An encoded file: its bytes, MIME type and `formats` name ("JPEG", "PNG", "HEIC"...)."""

    data: bytes
    mime: str
    format: str


def output_jpeg_quality(decoded: DecodedImage) -> int:
    """The quality a protected JPEG is saved at: the source's own within JPEG_QUALITY_BOUNDS."""
    if decoded.jpeg_quality is None:
        return DEFAULT_JPEG_QUALITY
    low, high = JPEG_QUALITY_BOUNDS
    return min(high, max(low, decoded.jpeg_quality))


def encode_image(pixels: torch.Tensor, decoded: DecodedImage, *,
                 jpeg_quality: int | None = None,
                 webp_quality: int = DEFAULT_WEBP_QUALITY) -> EncodedImage:
    """Encode (3, H, W) RGB pixels in [0, 1] (values outside are clipped) in `decoded`'s output
    format (`output_format`), with `decoded`'s alpha, ICC profile and DPI. H, W must match
    `decoded.pixels`. `jpeg_quality` None = the source's own (`output_jpeg_quality`) and its
    chroma subsampling."""
    output = output_format(decoded)
    image = _to_pil(_checked_pixels(pixels, decoded), decoded, output)
    options = _save_options(decoded, output, jpeg_quality, webp_quality)
    buffer = io.BytesIO()
    if output == "HEIC":   # pillow-heif is not registered in Pillow (decode: no global state)
        pillow_heif.from_pillow(image).save(buffer, **options)
    else:
        image.save(buffer, output, **options)
    return EncodedImage(buffer.getvalue(), formats.BY_NAME[output].mime, output)


def output_format(decoded: DecodedImage) -> str:
    """The format the protected copy of `decoded` is written in: its own, or PNG for a GIF."""
    return formats.BY_NAME[decoded.format].output


def strip_metadata_only(decoded: DecodedImage) -> EncodedImage:
    """The source file without its metadata, pixels bit-identical (see module docstring). For a
    PIL image decoded without source bytes, or a format `containers` does not rewrite, falls back
    to `encode_image` of its own pixels (lossless for PNG, lossless WebP, BMP, TIFF, GIF)."""
    if decoded.source_bytes is None or decoded.format not in containers.STRUCTURED_FORMATS:
        return encode_image(decoded.pixels, decoded)
    data = containers.strip_metadata(decoded.source_bytes, decoded.format,
                                           decoded.orientation)
    return EncodedImage(data, decoded.mime, decoded.format)


def _checked_pixels(pixels: torch.Tensor, decoded: DecodedImage) -> torch.Tensor:
    pixels = pixels.detach().to("cpu", torch.float32)
    if pixels.shape != decoded.pixels.shape:
        raise ValueError(f"pixels have shape {tuple(pixels.shape)}, the decoded image "
                         f"{tuple(decoded.pixels.shape)}: encode keeps the pixel size")
    if not torch.isfinite(pixels).all():
        raise ValueError("pixels contain NaN or infinity")
    return pixels


def _quantise(channels: torch.Tensor, levels: int) -> np.ndarray:
    """(C, H, W) floats in [0, 1] -> (H, W, C) integers 0..levels, round to nearest."""
    dtype = np.uint8 if levels <= _LEVELS_8BIT else np.uint16
    rounded = torch.round(channels.clamp(0.0, 1.0) * levels)
    return rounded.permute(1, 2, 0).numpy().astype(dtype)


def _channels_equal(rgb: np.ndarray) -> bool:
    return bool((rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all())


def _to_pil(pixels: torch.Tensor, decoded: DecodedImage, output: str) -> Image.Image:
    alpha = decoded.alpha if output in _FORMATS_WITH_ALPHA else None
    if decoded.bits_per_channel > 8 and output in _FORMATS_WITH_16BIT_GREY and alpha is None:
        rgb16 = _quantise(pixels, _LEVELS_16BIT)
        if decoded.is_greyscale and _channels_equal(rgb16):
            return Image.fromarray(rgb16[:, :, 0])  # uint16 (H, W) -> mode I;16
    rgb = _quantise(pixels, _LEVELS_8BIT)
    channels = rgb[:, :, :1] if decoded.is_greyscale and _channels_equal(rgb) else rgb
    if alpha is not None:
        channels = np.concatenate([channels, _quantise(alpha, _LEVELS_8BIT)], axis=2)
    if channels.shape[2] == 1:
        channels = channels[:, :, 0]  # (H, W) -> mode L
    return Image.fromarray(np.ascontiguousarray(channels))


def _save_options(decoded: DecodedImage, output: str, jpeg_quality: int, webp_quality: int) -> dict:
    options: dict = {}
    if decoded.icc_profile:
        options["icc_profile"] = decoded.icc_profile
    if decoded.dpi and output in _FORMATS_WITH_DPI:
        options["dpi"] = decoded.dpi
    if output in ("HEIC", "AVIF"):
        options["quality"] = DEFAULT_HEIF_QUALITY
    elif output == "TIFF":
        options["compression"] = TIFF_COMPRESSION
    elif output == "JPEG":
        follow_source = jpeg_quality is None
        quality = output_jpeg_quality(decoded) if follow_source else jpeg_quality
        if follow_source and decoded.jpeg_subsampling is not None:
            subsampling = decoded.jpeg_subsampling
        else:
            subsampling = _PILLOW_SUBSAMPLING_444 if quality >= FULL_CHROMA_MIN_QUALITY else _PILLOW_SUBSAMPLING_420
        options.update(quality=quality, optimize=True, subsampling=subsampling)
    elif output == "WEBP":
        if decoded.lossless:
            options.update(lossless=True, exact=True)  # exact: keep colour under transparent pixels
        else:
            options.update(quality=webp_quality)
    return options
