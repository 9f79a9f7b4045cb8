"""The one list of image formats LowKey knows, decided by a file's bytes (magic numbers), never by
its MIME type or name, and what happens to each: protected in kind, converted, or stopped.

The daemon advertises the protected ones in `welcome` (daemon/PROTOCOL.md); the extension keeps
the same table in extension/shared/formats.js, and tests/test_formats_agree.py holds the two
to the same names, MIME types, extensions, magic numbers and handling.

- in kind: JPEG (MPO: its first image), PNG, WebP, HEIC/HEIF, AVIF, BMP, TIFF. Each can hold the
  protected pixels as they are (the lossy ones at high quality).
- converted: a one-frame GIF comes back as PNG. A GIF holds at most 256 colours: quantising the
  protected pixels back into a palette would undo much of the change; PNG keeps all of it.
- stopped: JPEG 2000, JPEG XL, PSD, ICO, SVG: not read, or not photos.

Animated images (GIF, APNG, animated WebP/AVIF, HEIC sequences, multi-page TIFF) are stopped by
`decode` once it has counted their frames: see `decode.AnimatedImageError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Handling(enum.StrEnum):
    """What LowKey does with a format."""

    IN_KIND = "in_kind"        # protected and written back in the same format
    CONVERTED = "converted"    # protected and written back in another (`ImageFormat.output`)
    STOPPED = "stopped"        # refused with a message naming the format


#: A magic number: every (byte offset, bytes) pair must match.
Signature = tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class ImageFormat:
    """One format. name: LowKey's (and Pillow's, except HEIC) name; mimes: the MIME types that
    name it, the first the one written; extensions: file name extensions, lower case, no dot,
    the first the one written; signatures: any one matching identifies the file; brands: the
    ISO-BMFF `ftyp` brands that identify it (HEIF family); output: the format written back."""

    name: str
    mimes: tuple[str, ...]
    extensions: tuple[str, ...]
    handling: Handling
    signatures: tuple[Signature, ...] = ()
    brands: tuple[bytes, ...] = ()
    output: str | None = None

    @property
    def mime(self) -> str:
        return self.mimes[0]

    @property
    def extension(self) -> str:
        return self.extensions[0]


def _at_start(*prefixes: bytes) -> tuple[Signature, ...]:
    return tuple(((0, prefix),) for prefix in prefixes)


#: BMP: "BM", then at byte 14 the size of one of the DIB headers that exist (a bare "BM" is too
#: common at the start of text to name a file by).
_BMP_DIB_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)

FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("JPEG", ("image/jpeg", "image/pjpeg"), ("jpg", "jpeg", "jfif", "jpe"),
                Handling.IN_KIND, _at_start(b"\xff\xd8\xff"), output="JPEG"),
    ImageFormat("PNG", ("image/png", "image/apng"), ("png", "apng"),
                Handling.IN_KIND, _at_start(b"\x89PNG\r\n\x1a\n"), output="PNG"),
    ImageFormat("WEBP", ("image/webp",), ("webp",),
                Handling.IN_KIND, (((0, b"RIFF"), (8, b"WEBP")),), output="WEBP"),
    ImageFormat("HEIC", ("image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence"),
                ("heic", "heif", "hif"), Handling.IN_KIND,
                brands=(b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"),
                output="HEIC"),
    ImageFormat("AVIF", ("image/avif",), ("avif",), Handling.IN_KIND,
                brands=(b"avif", b"avis"), output="AVIF"),
    ImageFormat("BMP", ("image/bmp", "image/x-ms-bmp"), ("bmp", "dib"), Handling.IN_KIND,
                tuple(((0, b"BM"), (14, size.to_bytes(4, "little"))) for size in _BMP_DIB_HEADER_SIZES),
                output="BMP"),
    ImageFormat("TIFF", ("image/tiff", "image/tiff-fx"), ("tif", "tiff"), Handling.IN_KIND,
                _at_start(b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), output="TIFF"),
    ImageFormat("GIF", ("image/gif",), ("gif",), Handling.CONVERTED,
                _at_start(b"GIF87a", b"GIF89a"), output="PNG"),
    ImageFormat("JPEG 2000", ("image/jp2", "image/jpx", "image/jpm"), ("jp2", "j2k", "jpf", "jpx", "jpm"),
                Handling.STOPPED, _at_start(b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")),
    ImageFormat("JPEG XL", ("image/jxl",), ("jxl",), Handling.STOPPED,
                _at_start(b"\x00\x00\x00\x0cJXL \r\n\x87\n", b"\xff\x0a")),
    ImageFormat("PSD", ("image/vnd.adobe.photoshop",), ("psd",), Handling.STOPPED, _at_start(b"8BPS")),
    ImageFormat("ICO", ("image/x-icon", "image/vnd.microsoft.icon"), ("ico", "cur"), Handling.STOPPED,
                _at_start(b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")),
    ImageFormat("SVG", ("image/svg+xml",), ("svg", "svgz"), Handling.STOPPED),   # by `_looks_like_svg`
)
BY_NAME = {image_format.name: image_format for image_format in FORMATS}

#: Generic HEIF brands: a HEIF file whose coding the other brands do not name; read as HEIC.
GENERIC_HEIF_BRANDS = (b"mif1", b"msf1", b"mif2")
#: Files that are not images, named in refusals (the extension lets them pass untouched).
NOT_IMAGES: tuple[tuple[bytes, str], ...] = ((b"%PDF", "PDF"),)
#: How many leading bytes sniffing reads: enough for the ftyp box's brands and an SVG's root.
SNIFF_BYTES = 1024
#: What an SVG starts with (after a byte-order mark and white space): its root, or the XML
#: declaration, doctype or a comment before it; `<svg` must then appear within SNIFF_BYTES.
_SVG_STARTS = (b"<svg", b"<?xml", b"<!DOCTYPE svg", b"<!--")
_UTF8_BOM = b"\xef\xbb\xbf"
_FTYP_BOX = slice(4, 8)


def sniff(data: bytes) -> ImageFormat | None:
    """The image format `data` (a file's first SNIFF_BYTES or more) is, by its bytes; else None."""
    if data[_FTYP_BOX] == b"ftyp":
        return _sniff_heif(data)
    for image_format in FORMATS:
        if any(all(data[offset:offset + len(magic)] == magic for offset, magic in signature)
               for signature in image_format.signatures):
            return image_format
    return BY_NAME["SVG"] if _looks_like_svg(data) else None


def _sniff_heif(data: bytes) -> ImageFormat | None:
    """HEIC or AVIF by the ftyp box: its major brand, else its compatible brands; a generic HEIF
    brand alone reads as HEIC. None for other ISO-BMFF files (MP4, QuickTime...)."""
    box_size = int.from_bytes(data[:4], "big")
    compatible = data[16:min(box_size, len(data), SNIFF_BYTES)]
    brands = [data[8:12]] + [compatible[i:i + 4] for i in range(0, len(compatible) - 3, 4)]
    for brand in brands:
        for image_format in FORMATS:
            if brand in image_format.brands:
                return image_format
    if any(brand in GENERIC_HEIF_BRANDS for brand in brands):
        return BY_NAME["HEIC"]
    return None


def _looks_like_svg(data: bytes) -> bool:
    head = data[:SNIFF_BYTES]
    text = head.removeprefix(_UTF8_BOM).lstrip()
    return text.startswith(_SVG_STARTS) and b"<svg" in head


def sniff_name(data: bytes) -> str | None:
    """A name for what `data` is ("JPEG", "HEIC", "PDF"...), image or not; None when unknown."""
    image_format = sniff(data)
    if image_format is not None:
        return image_format.name
    return next((name for prefix, name in NOT_IMAGES if data.startswith(prefix)), None)


def protected_formats() -> tuple[ImageFormat, ...]:
    """The formats LowKey protects: in kind or converted."""
    return tuple(f for f in FORMATS if f.handling is not Handling.STOPPED)


def advertised() -> list[dict]:
    """The protected formats as the daemon's `welcome.formats` lists them (daemon/PROTOCOL.md)."""
    return [{"name": f.name, "mimes": list(f.mimes), "extensions": list(f.extensions),
             "output": f.output} for f in protected_formats()]


def filename_for(filename: str, format_name: str) -> str:
    """`filename` with an extension that names `format_name`: kept when it already does (".jpeg"
    for JPEG), else replaced (or added) with the format's own. "" stays ""."""
    if not filename:
        return filename
    image_format = BY_NAME[format_name]
    stem, dot, extension = filename.rpartition(".")
    if dot and stem and extension.lower() in image_format.extensions:
        return filename
    return f"{stem if dot and stem else filename}.{image_format.extension}"
