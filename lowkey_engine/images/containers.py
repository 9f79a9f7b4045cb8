"""Byte-level structure of JPEG, PNG and WebP files, without decoding pixels.

Three jobs that need the file's segments/chunks rather than its pixels:
- `sniff_format`: name a file's format from its first bytes (`formats`' table), so refusals can
  say what the file was;
- `check_complete`: refuse files that end before their end marker (JPEG EOI, PNG IEND, WebP RIFF
  size), whatever `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` says;
- `strip_metadata`: rewrite a file without its metadata segments/chunks, keeping the compressed
  image data byte for byte, so the decoded pixels stay bit-identical (no re-encoding). Colour
  (ICC profile, PNG gamma/chromaticities) and resolution stay; EXIF (GPS, serial numbers, maker
  notes, thumbnails), XMP, IPTC, comments, text chunks and unknown chunks go. When the photo's
  orientation is not 1, a minimal EXIF holding only the Orientation tag is written back, because
  the stored pixels are not upright and viewers need the tag to show them the right way up.

Formats are Pillow's names: "JPEG", "PNG", "WEBP".
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import Iterator

from PIL import ExifTags, Image

from . import formats
from .errors import BadImageError, TruncatedImageError

# ---------------------------------------------------------------- sniffing

def sniff_format(data: bytes) -> str | None:
    """Format name from the first bytes ("JPEG", "PNG", "WEBP", "HEIC", "GIF", "PDF"...), else
    None: `formats.sniff_name`, the one table of magic numbers."""
    return formats.sniff_name(data)


# ---------------------------------------------------------------- JPEG

_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = 0xD8, 0xD9, 0xDA
_JPEG_APP0, _JPEG_APP1, _JPEG_APP2, _JPEG_APP14, _JPEG_APP15 = 0xE0, 0xE1, 0xE2, 0xEE, 0xEF
_JPEG_COM = 0xFE
#: Markers with no length field: TEM and the restart markers RST0-7.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
#: In entropy-coded data, 0xFF is followed by 0x00 (stuffing), RSTn, or fill 0xFF; anything else
#: starts the next marker.
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: APPn segments kept, by marker and identifier prefix: JFIF (density; thumbnail removed),
#: ICC profile chunks, Adobe (colour transform flag: needed to decode YCCK/CMYK correctly).
_JPEG_KEPT_APPS = (
    (_JPEG_APP0, b"JFIF\x00"), (_JPEG_APP2, b"ICC_PROFILE\x00"), (_JPEG_APP14, b"Adobe"))
#: JFIF APP0 payload up to and including the thumbnail width/height bytes.
_JFIF_HEADER_LEN = 14
_EXIF_PREFIX = b"Exif\x00\x00"


@dataclass(frozen=True)
class _Segment:
    """A JPEG marker segment data[start:end] (marker bytes included; SOS includes its scan data)."""

    marker: int
    start: int
    end: int


def _jpeg_segments(data: bytes) -> Iterator[_Segment]:
    """A JPEG's segments from SOI to the first EOI; TruncatedImageError if EOI is missing."""
    if not data.startswith(b"\xff\xd8"):
        raise BadImageError("not a JPEG file (no start-of-image marker)")
    yield _Segment(_JPEG_SOI, 0, 2)
    pos = 2
    size = len(data)
    while True:
        pos = data.find(b"\xff", pos)  # skips stray bytes between segments, as libjpeg does
        while 0 <= pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if not 0 < pos < size:
            raise TruncatedImageError("the JPEG file is truncated (it ends before its end marker)")
        marker, start = data[pos], pos - 1
        pos += 1
        if marker == _JPEG_EOI:
            yield _Segment(marker, start, pos)
            return
        if marker in _JPEG_STANDALONE:
            yield _Segment(marker, start, pos)
            continue
        if pos + 2 > size:
            raise TruncatedImageError("the JPEG file is truncated (inside a segment header)")
        length = int.from_bytes(data[pos:pos + 2], "big")
        end = pos + length
        if length < 2:
            raise BadImageError(f"damaged JPEG file: segment length {length} at byte {pos}")
        if end > size:
            raise TruncatedImageError("the JPEG file is truncated (inside a segment)")
        if marker == _JPEG_SOS:
            next_marker = _JPEG_NEXT_MARKER.search(data, end)
            if next_marker is None:
                raise TruncatedImageError("the JPEG file is truncated (inside its image data)")
            end = next_marker.start()
        yield _Segment(marker, start, end)
        pos = end


def _jpeg_segment_kept(data: bytes, segment: _Segment) -> bool:
    if segment.marker == _JPEG_COM:
        return False
    if not _JPEG_APP0 <= segment.marker <= _JPEG_APP15:
        return True
    payload = data[segment.start + 4:segment.end]
    return any(segment.marker == marker and payload.startswith(ident)
               for marker, ident in _JPEG_KEPT_APPS)


def _jpeg_segment_bytes(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _strip_jpeg(data: bytes, orientation: int) -> bytes:
    out = []
    orientation_written = orientation == 1
    for segment in _jpeg_segments(data):
        if not orientation_written and segment.marker not in (_JPEG_SOI, _JPEG_APP0):
            out.append(_jpeg_segment_bytes(_JPEG_APP1, orientation_exif(orientation)))
            orientation_written = True
        if not _jpeg_segment_kept(data, segment):
            continue
        if segment.marker == _JPEG_APP0:  # JFIF: keep density, drop the embedded thumbnail
            header = bytearray(data[segment.start + 4:segment.start + 4 + _JFIF_HEADER_LEN])
            if len(header) == _JFIF_HEADER_LEN:  # else malformed: dropped
                header[-2:] = b"\x00\x00"
                out.append(_jpeg_segment_bytes(_JPEG_APP0, bytes(header)))
        else:
            out.append(data[segment.start:segment.end])
    return b"".join(out)  # anything after EOI (MPO secondary images, trailers) is dropped


# ---------------------------------------------------------------- PNG

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Chunks kept: critical ones, transparency, colour (gamma, chromaticities, sRGB, ICC, CICP, HDR
#: mastering/light levels), significant bits, background colour and physical pixel size.
_PNG_KEPT_CHUNKS = frozenset({
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"cICP",
    b"mDCV", b"cLLI", b"sBIT", b"bKGD", b"pHYs",
})
_PNG_CHUNK_OVERHEAD = 12  # length, type, CRC


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk through IEND; TruncatedImageError if IEND is missing."""
    if not data.startswith(_PNG_SIGNATURE):
        raise BadImageError("not a PNG file (no PNG signature)")
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise TruncatedImageError("the PNG file is truncated (it ends before its IEND chunk)")
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunk_type = data[pos + 4:pos + 8]
        end = pos + length + _PNG_CHUNK_OVERHEAD
        if end > len(data):
            raise TruncatedImageError("the PNG file is truncated (inside a chunk)")
        yield chunk_type, pos, end
        if chunk_type == b"IEND":
            return
        pos = end


def _png_chunk_bytes(chunk_type: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + payload)
    return struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", crc)


def _strip_png(data: bytes, orientation: int) -> bytes:
    out = [_PNG_SIGNATURE]
    orientation_written = orientation == 1
    for chunk_type, start, end in _png_chunks(data):
        if chunk_type == b"IDAT" and not orientation_written:
            exif_tiff = orientation_exif(orientation)[len(_EXIF_PREFIX):]
            out.append(_png_chunk_bytes(b"eXIf", exif_tiff))
            orientation_written = True
        if chunk_type in _PNG_KEPT_CHUNKS:
            out.append(data[start:end])
    return b"".join(out)


# ---------------------------------------------------------------- WebP

_WEBP_HEADER_LEN = 12  # "RIFF", size, "WEBP"
#: Chunks kept: the extended header, colour profile, alpha, image data and animation structure.
_WEBP_KEPT_CHUNKS = frozenset({b"VP8X", b"ICCP", b"ALPH", b"VP8 ", b"VP8L", b"ANIM", b"ANMF"})
#: VP8X flag bits (first payload byte).
_VP8X_EXIF_FLAG, _VP8X_XMP_FLAG = 0x08, 0x04
#: ANMF payload: frame x, y, width, height (3 bytes each), duration (3), flags (1); then chunks.
_ANMF_HEADER_LEN = 16


def _webp_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(fourcc, payload) of each chunk; raises TruncatedImageError if the RIFF is incomplete."""
    if not (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        raise BadImageError("not a WebP file (no RIFF/WEBP header)")
    riff_end = 8 + int.from_bytes(data[4:8], "little")
    if riff_end > len(data):
        raise TruncatedImageError("the WebP file is truncated (shorter than its RIFF header says)")
    return _riff_chunks(data, _WEBP_HEADER_LEN, riff_end)


def _riff_chunks(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, bytes]]:
    """(fourcc, payload) of the RIFF chunks in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        fourcc = data[pos:pos + 4]
        length = int.from_bytes(data[pos + 4:pos + 8], "little")
        chunk_end = pos + 8 + length
        if chunk_end > end:
            raise TruncatedImageError("the WebP file is truncated (inside a chunk)")
        yield fourcc, data[pos + 8:chunk_end]
        pos = chunk_end + (length & 1)  # chunks are padded to an even size


def _webp_chunk_bytes(fourcc: bytes, payload: bytes) -> bytes:
    padding = b"\x00" if len(payload) & 1 else b""
    return fourcc + struct.pack("<I", len(payload)) + payload + padding


def webp_is_lossless(data: bytes) -> bool:
    """True when the WebP's (first) image chunk is VP8L (lossless), False for VP8 (lossy)."""
    return _first_image_chunk_is_lossless(_webp_chunks(data))


def _first_image_chunk_is_lossless(chunks: Iterator[tuple[bytes, bytes]]) -> bool:
    for fourcc, payload in chunks:
        if fourcc in (b"VP8L", b"VP8 "):
            return fourcc == b"VP8L"
        if fourcc == b"ANMF":  # animation frame: a frame header, then the frame's own chunks
            return _first_image_chunk_is_lossless(
                _riff_chunks(payload, _ANMF_HEADER_LEN, len(payload)))
    return False


def _strip_webp(data: bytes, orientation: int) -> bytes:
    chunks = [(fourcc, payload) for fourcc, payload in _webp_chunks(data)
              if fourcc in _WEBP_KEPT_CHUNKS]
    has_extended_header = bool(chunks) and chunks[0][0] == b"VP8X"
    write_orientation = orientation != 1 and has_extended_header
    if has_extended_header:
        flags = chunks[0][1][0] & ~(_VP8X_EXIF_FLAG | _VP8X_XMP_FLAG)
        if write_orientation:
            flags |= _VP8X_EXIF_FLAG
        chunks[0] = (b"VP8X", bytes((flags,)) + chunks[0][1][1:])
    if write_orientation:
        chunks.append((b"EXIF", orientation_exif(orientation)[len(_EXIF_PREFIX):]))
    body = b"WEBP" + b"".join(_webp_chunk_bytes(fourcc, payload) for fourcc, payload in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# ---------------------------------------------------------------- public

_STRUCTURE_WALKERS = {"JPEG": _jpeg_segments, "PNG": _png_chunks, "WEBP": _webp_chunks}
_STRIPPERS = {"JPEG": _strip_jpeg, "PNG": _strip_png, "WEBP": _strip_webp}
#: Formats whose structure is checked (`check_complete`) and rewritten without metadata
#: (`strip_metadata`); the others are only ever re-encoded.
STRUCTURED_FORMATS = frozenset(_STRUCTURE_WALKERS)


def check_complete(data: bytes, format_name: str) -> None:
    """Raise TruncatedImageError if `data` ends before its format's end marker; BadImageError if
    its structure is broken. `format_name`: "JPEG", "PNG" or "WEBP"."""
    for _ in _STRUCTURE_WALKERS[format_name](data):
        pass


def orientation_exif(orientation: int) -> bytes:
    """An EXIF block ("Exif\\0\\0" + TIFF) holding only the Orientation tag (1-8)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif.tobytes()


def strip_metadata(data: bytes, format_name: str, orientation: int = 1) -> bytes:
    """`data` rewritten without metadata; compressed image data untouched (bit-identical pixels).

    format_name: "JPEG", "PNG" or "WEBP". orientation: the source's EXIF orientation (1-8); when
    not 1 a minimal EXIF with only that tag is written (for WebP only if it has a VP8X header,
    which any WebP carrying EXIF has).
    """
    return _STRIPPERS[format_name](data, orientation)
