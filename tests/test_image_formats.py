"""Every image format a browser can upload: decided by its bytes, protected in kind (HEIC, AVIF,
BMP, TIFF, and JPEG/PNG/WebP whatever their names), converted (a still GIF comes back as PNG), or
refused naming the format (animated and multi-page files, JPEG 2000/XL, PSD, ICO, SVG); metadata
gone in every case; the output's name and MIME type follow its bytes.

Inputs are a real face photo (/work/shared/data/faces) converted here to each format, with private
metadata planted where the format can carry it.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
import torch
from PIL import ExifTags, Image, TiffImagePlugin

from lowkey_engine import cli
from lowkey_engine.images import containers, formats
from lowkey_engine.images.decode import SUPPORTED_FORMATS, decode_image
from lowkey_engine.images.encode import encode_image, strip_metadata_only
from lowkey_engine.images.errors import AnimatedImageError, UnsupportedFormatError

#: Side of the square crop of the face photo the tests convert (pixels): small, for speed.
SIDE = 160
SECRET = "GPS-SECRET-51.5N"
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="' + SECRET.encode()
       + b'"/></rdf:RDF></x:xmpmeta>')
#: The lossy formats' protected copy against their decoded source: at least this PSNR (dB).
MIN_LOSSY_PSNR_DB = 35.0


@pytest.fixture(scope="module")
def face(faces_dir) -> Image.Image:
    photo = faces_dir / "photos-group" / "obama.jpg"
    with Image.open(photo) as image:
        image = image.convert("RGB")
    width, height = image.size
    side = min(width, height)
    return image.crop(((width - side) // 2, 0, (width + side) // 2, side)).resize((SIDE, SIDE))


def private_exif() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Artist] = SECRET
    exif[ExifTags.IFD.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSMapDatum: SECRET}
    return exif.tobytes()


def saved(image: Image.Image, fmt: str) -> bytes:
    """`image` in `fmt` with private EXIF (and XMP, comments) wherever the format holds them."""
    buffer = io.BytesIO()
    if fmt == "HEIC":
        pillow_heif.from_pillow(image).save(buffer, quality=90, exif=private_exif(), xmp=XMP)
    elif fmt == "AVIF":
        image.save(buffer, "AVIF", quality=90, exif=private_exif(), xmp=XMP)
    elif fmt == "TIFF":
        info = TiffImagePlugin.ImageFileDirectory_v2()
        info[ExifTags.Base.Artist] = SECRET
        info[700] = XMP   # XMP packet tag
        image.save(buffer, "TIFF", tiffinfo=info, compression="tiff_lzw")
    elif fmt == "GIF":
        image.save(buffer, "GIF", comment=SECRET.encode())
    elif fmt == "BMP":   # BMP holds no metadata
        image.save(buffer, "BMP")
    else:
        image.save(buffer, fmt, exif=private_exif())
    data = buffer.getvalue()
    assert fmt == "BMP" or SECRET.encode() in data, f"the test failed to plant metadata in {fmt}"
    return data


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a - b) ** 2)))


def assert_no_metadata(data: bytes) -> None:
    assert SECRET.encode() not in data and b"xmpmeta" not in data


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("fmt, output, lossless", [
    ("HEIC", "HEIC", False), ("AVIF", "AVIF", False), ("BMP", "BMP", True), ("TIFF", "TIFF", True),
    ("GIF", "PNG", True),
])
def test_each_format_round_trips_in_its_output_format_without_metadata(face, fmt, output, lossless):
    data = saved(face, fmt)
    decoded = decode_image(data)
    assert (decoded.format, decoded.size, decoded.lossless) == (fmt, (SIDE, SIDE), lossless)
    changed = (decoded.pixels + 0.02 * torch.sin(torch.arange(SIDE) / 3.0)).clamp(0, 1)   # a "protection"
    for result in (encode_image(changed, decoded), strip_metadata_only(decoded)):
        assert result.format == output and formats.sniff(result.data).name == output
        assert result.mime == formats.BY_NAME[output].mime
        assert_no_metadata(result.data)
    protected = decode_image(encode_image(changed, decoded).data)
    assert protected.size == (SIDE, SIDE)
    if lossless:   # every changed pixel as it was quantised to 8 bits
        assert torch.allclose(protected.pixels, (changed * 255).round() / 255, atol=1e-6)
    else:
        assert psnr_db(protected.pixels, changed) > MIN_LOSSY_PSNR_DB


def test_a_gif_comes_back_as_png_holding_more_than_its_palette(face):
    """Why GIF is converted: the protected pixels need more than 256 colours; PNG keeps them all."""
    decoded = decode_image(saved(face, "GIF"))
    changed = (decoded.pixels + torch.linspace(0, 0.05, SIDE)).clamp(0, 1)
    out = decode_image(encode_image(changed, decoded).data)
    assert out.format == "PNG"
    colours = np.unique(to_uint8(out.pixels).reshape(-1, 3), axis=0)
    assert len(colours) > 256
    assert torch.allclose(out.pixels, (changed * 255).round() / 255, atol=1e-6)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    return (pixels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def test_a_transparent_gif_keeps_its_transparency_as_png():
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    image.putpixel((0, 0), 0)
    buffer = io.BytesIO()
    image.save(buffer, "GIF", transparency=0)
    decoded = decode_image(buffer.getvalue())
    assert decoded.alpha is not None and decoded.alpha[0, 0, 0] == 0 and decoded.alpha[0, 1, 1] == 1
    out = Image.open(io.BytesIO(encode_image(decoded.pixels, decoded).data))
    assert out.format == "PNG" and out.convert("RGBA").getpixel((0, 0))[3] == 0


# ---------------------------------------------------------------- bytes decide

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIC", "BMP"])
@pytest.mark.parametrize("name", ["photo.dat", "photo.jpg", "photo"])
def test_the_bytes_decide_the_format_not_the_name(face, tmp_path, fmt, name):
    path = tmp_path / name
    path.write_bytes(saved(face, fmt))
    decoded = decode_image(path)
    assert decoded.format == fmt
    extension = formats.BY_NAME[formats.BY_NAME[fmt].output].extension
    expected = name if name.endswith(f".{extension}") else f"photo.{extension}"
    assert formats.filename_for(name, encode_image(decoded.pixels, decoded).format) == expected


@pytest.mark.parametrize("name, fmt, expected", [
    ("me.jpg", "PNG", "me.png"), ("me.JPEG", "JPEG", "me.JPEG"), ("wave.gif", "PNG", "wave.png"),
    ("photo.dat", "JPEG", "photo.jpg"), ("photo", "HEIC", "photo.heic"), ("IMG_1.HEIF", "HEIC", "IMG_1.HEIF"),
    (".hidden", "PNG", ".hidden.png"), ("", "PNG", ""), ("scan.tif", "TIFF", "scan.tif"),
])
def test_output_names_follow_the_bytes(name, fmt, expected):
    assert formats.filename_for(name, fmt) == expected


def test_the_command_line_names_its_output_for_the_output_format():
    args = argparse.Namespace(output=None, out_dir=None)
    assert cli._output_path(Path("/p/wave.gif"), Path("/p"), "PNG", args) == Path("/p/wave.lowkey.png")
    assert cli._output_path(Path("/p/me.jpg"), Path("/p"), "PNG", args) == Path("/p/me.lowkey.png")
    assert cli._output_path(Path("/p/IMG.HEIC"), Path("/p"), "HEIC", args) == Path("/p/IMG.lowkey.heic")


def test_the_command_line_finds_every_protected_format_in_a_folder(tmp_path):
    for name in ("a.heic", "b.avif", "c.bmp", "d.tiff", "e.gif", "f.jpg", "notes.txt", "doc.pdf"):
        (tmp_path / name).write_bytes(b"x")
    found = sorted(photo.name for photo, _ in cli._inputs([str(tmp_path)]))
    assert found == ["a.heic", "b.avif", "c.bmp", "d.tiff", "e.gif", "f.jpg"]


# ---------------------------------------------------------------- stopped, with the format named

def frames(face: Image.Image) -> list[Image.Image]:
    return [face, face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]


@pytest.mark.parametrize("fmt, named", [
    ("GIF", "animated GIF"), ("PNG", "animated PNG"), ("WEBP", "animated WEBP"), ("TIFF", "multi-page TIFF"),
    ("AVIF", "animated AVIF"),
])
def test_animated_and_multi_page_images_are_stopped_naming_them(face, fmt, named):
    first, second = frames(face)
    buffer = io.BytesIO()
    first.save(buffer, fmt, save_all=True, append_images=[second], duration=100)
    with pytest.raises(AnimatedImageError, match=f"{named} images \\(2 frames\\)") as refused:
        decode_image(buffer.getvalue())
    assert refused.value.code == "bad_image"


def test_a_heic_holding_several_images_is_stopped(face):
    heif = pillow_heif.from_pillow(face)
    heif.add_from_pillow(face.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    buffer = io.BytesIO()
    heif.save(buffer, quality=80)
    with pytest.raises(AnimatedImageError, match="multi-image HEIC"):
        decode_image(buffer.getvalue())


@pytest.mark.parametrize("data, name", [
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(64), "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(64), "JPEG 2000"),
    (b"8BPS\x00\x01" + bytes(64), "PSD"),
    (b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
])
def test_formats_lowkey_cannot_hand_back_are_stopped_naming_them(data, name):
    with pytest.raises(UnsupportedFormatError) as refused:
        decode_image(data)
    assert refused.value.format_name == name and name in str(refused.value)
    assert all(f in str(refused.value) for f in ("HEIC", "AVIF", "GIF"))   # says what is protected


def test_an_icon_is_stopped_naming_it(face):
    buffer = io.BytesIO()
    face.save(buffer, "ICO")
    with pytest.raises(UnsupportedFormatError, match="ICO"):
        decode_image(buffer.getvalue())


# ---------------------------------------------------------------- the table itself

def test_every_protected_format_is_decoded_and_every_output_encodable():
    assert set(SUPPORTED_FORMATS) == {f.name for f in formats.protected_formats()}
    assert {f.output for f in formats.protected_formats()} <= set(SUPPORTED_FORMATS)


@pytest.mark.parametrize("data, expected", [
    (b"BMW is a fine car, and this is a text file" + bytes(40), None),   # "BM" alone is not BMP
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", None),          # an MP4
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1miaf", "HEIC"),        # generic HEIF
    (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", "AVIF"),
    (b"<!doctype html><html><body><svg></svg></body></html>", None),      # HTML holding an SVG
    (b"\xef\xbb\xbf  <svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
    (b"%PDF-1.7\n", None),
    (b"", None),
])
def test_sniffing_edge_cases(data, expected):
    found = formats.sniff(data)
    assert (found.name if found else None) == expected


def test_pdf_is_named_in_refusals_but_is_no_image():
    assert formats.sniff(b"%PDF-1.4") is None and containers.sniff_format(b"%PDF-1.4") == "PDF"


def test_welcome_advertises_the_protected_formats():
    advertised = formats.advertised()
    assert [f["name"] for f in advertised] == ["JPEG", "PNG", "WEBP", "HEIC", "AVIF", "BMP", "TIFF", "GIF"]
    assert next(f for f in advertised if f["name"] == "GIF")["output"] == "PNG"
