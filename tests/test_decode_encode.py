"""Decode and encode stages: what is refused, how pixels come in and go out, what metadata leaves.

Inputs are made here with Pillow, or read from the fetched face photos (conftest's `faces_dir`).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import (ExifTags, Image, ImageCms, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin)

from lowkey_engine.images import containers
from lowkey_engine.images.decode import DecodedImage, decode_image
from lowkey_engine.images.encode import encode_image, strip_metadata_only
from lowkey_engine.images.errors import (AnimatedImageError, BadImageError, ImageError,
                                        TooLargeError, TruncatedImageError,
                                        UnsupportedFormatError)

PORTRAIT = Path("photos-group") / "obama.jpg"
WEBP_NAMED_JPG = Path("photos-deepface") / "person03" / "img47.jpg"

#: Strings planted in metadata; none may appear in an output file.
SECRETS = {
    "artist": "ARTIST-SECRET",
    "body_serial": "BODY-SERIAL-SECRET",
    "lens_serial": "LENS-SERIAL-SECRET",
    "owner": "OWNER-SECRET",
    "maker_note": "MAKER-NOTE-SECRET",
    "gps": "GPS-DATUM-SECRET",
    "xmp": "XMP-SECRET",
    "comment": "COMMENT-SECRET",
    "png_text": "PNG-TEXT-SECRET",
}
MIN_JPEG_PSNR_DB = 40.0
#: WebP VP8X header flag bits (first payload byte).
WEBP_EXIF_FLAG, WEBP_XMP_FLAG = 0x08, 0x04


# ---------------------------------------------------------------- helpers

def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def random_rgb(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth_rgb(height: int = 64, width: int = 96) -> np.ndarray:
    """A smooth colour picture (JPEG-friendly), with no symmetry."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [x / width, y / height, (x * y) / (width * height)]
    return (np.stack(channels, axis=2) * 255).round().astype(np.uint8)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a - b) ** 2).item()
    return 10 * np.log10(1.0 / mse)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, C) uint8."""
    return (tensor.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + chunk_type + payload
            + struct.pack(">I", zlib.crc32(chunk_type + payload)))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width x height 8-bit RGB with a few bytes of (invalid) image data: costs
    nothing to make; decoding it would fail, so a size refusal proves the header was checked
    first."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + png_chunk(b"IEND", b""))


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """A baseline JPEG whose SOF0 header claims another size."""
    sof = data.index(b"\xff\xc0")
    return data[:sof + 5] + struct.pack(">HH", height, width) + data[sof + 9:]


def private_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Artist] = SECRETS["artist"]
    exif[ExifTags.Base.Make] = "Camera Maker"
    exif[ExifTags.IFD.Exif] = {
        ExifTags.Base.BodySerialNumber: SECRETS["body_serial"],
        ExifTags.Base.LensSerialNumber: SECRETS["lens_serial"],
        ExifTags.Base.CameraOwnerName: SECRETS["owner"],
        ExifTags.Base.MakerNote: SECRETS["maker_note"].encode(),
    }
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (51.0, 30.0, 12.5),
        ExifTags.GPS.GPSMapDatum: SECRETS["gps"],
    }
    return exif


def exif_bytes_with_thumbnail(exif: Image.Exif, thumbnail_jpeg: bytes) -> bytes:
    """`exif` serialised ("Exif\\0\\0" + big-endian TIFF) plus an IFD1 holding a JPEG thumbnail
    (Pillow's Exif API does not write IFD1)."""
    prefix_len = len(b"Exif\x00\x00")
    data = bytearray(exif.tobytes())
    tiff_start = prefix_len
    ifd0 = tiff_start + struct.unpack(">I", data[tiff_start + 4:tiff_start + 8])[0]
    entries = struct.unpack(">H", data[ifd0:ifd0 + 2])[0]
    next_ifd_at = ifd0 + 2 + 12 * entries
    ifd1 = len(data) - tiff_start
    data[next_ifd_at:next_ifd_at + 4] = struct.pack(">I", ifd1)
    thumbnail_at = ifd1 + 2 + 2 * 12 + 4
    long_type = 4
    data += struct.pack(">H", 2)
    data += struct.pack(">HHII", 0x0201, long_type, 1, thumbnail_at)  # JPEGInterchangeFormat
    data += struct.pack(">HHII", 0x0202, long_type, 1, len(thumbnail_jpeg))  # ...Length
    data += struct.pack(">I", 0) + thumbnail_jpeg
    return bytes(data)


@functools.cache
def srgb_icc() -> bytes:
    """An sRGB ICC profile; made once, since its header holds the time it was made."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def flat_cmyk_icc(lab_bytes: tuple[int, int, int] = (128, 128, 128)) -> bytes:
    """A tiny ICC v2 CMYK output profile whose A2B0 maps every CMYK value to one Lab colour
    (default L=50, a=b=0: mid grey). Decoding through it proves the profile was used."""
    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    d50 = s15(0.9642) + s15(1.0) + s15(0.8249)
    desc_text = b"flat test CMYK\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(desc_text)) + desc_text + bytes(8 + 3 + 67)
    identity = b"".join(s15(float(r == c)) for r in range(3) for c in range(3))
    ramp = bytes(range(256))
    grid_points, inputs, outputs = 2, 4, 3
    lut8 = (b"mft1" + bytes(4) + bytes((inputs, outputs, grid_points, 0)) + identity
            + ramp * inputs + bytes(lab_bytes) * grid_points ** inputs + ramp * outputs)
    tags = [(b"desc", desc), (b"wtpt", b"XYZ " + bytes(4) + d50),
            (b"cprt", b"text" + bytes(4) + b"none\x00"), (b"A2B0", lut8)]
    header_len, offset = 128, 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, payload in tags:
        payload += bytes(-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += payload
    header = (struct.pack(">I", offset + len(body)) + bytes(4) + struct.pack(">I", 0x02100000)
              + b"prtr" + b"CMYK" + b"Lab " + bytes(12) + b"acsp" + bytes(28) + d50 + bytes(48))
    assert len(header) == header_len
    return header + struct.pack(">I", len(tags)) + table + body


def refusal(data, **limits) -> ImageError:
    with pytest.raises(ImageError) as caught:
        decode_image(data, **limits)
    message = str(caught.value)
    assert message and "\n" not in message
    return caught.value


# ---------------------------------------------------------------- refusals

def test_zero_bytes_refused():
    error = refusal(b"")
    assert isinstance(error, BadImageError) and error.code == "bad_image"
    assert "empty" in str(error)


def test_too_many_bytes_refused(tmp_path):
    data = encoded(Image.fromarray(random_rgb()), "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        error = refusal(source, max_bytes=len(data) - 1)
        assert isinstance(error, TooLargeError) and error.code == "too_large"
    assert decode_image(path, max_bytes=len(data)).size == (32, 24)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("keep", ["all_but_last_byte", "all_but_end_marker", "half"])
@pytest.mark.parametrize("pillow_accepts_truncated", [False, True])
def test_truncated_file_refused(fmt, keep, pillow_accepts_truncated, monkeypatch):
    """Refused even when another module has switched Pillow's LOAD_TRUNCATED_IMAGES on."""
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # importing the engine left it off
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pillow_accepts_truncated)
    data = encoded(Image.fromarray(smooth_rgb()), fmt)
    end_marker_len = {"JPEG": 2, "PNG": 12, "WEBP": 1}[fmt]  # EOI, IEND chunk; WebP: RIFF size
    cut = {"all_but_last_byte": len(data) - 1, "all_but_end_marker": len(data) - end_marker_len,
           "half": len(data) // 2}[keep]
    error = refusal(data[:cut])
    assert isinstance(error, TruncatedImageError) and error.code == "bad_image"
    assert "truncated" in str(error) and fmt.replace("WEBP", "WebP") in str(error)


def test_truncation_check_sees_the_end_marker_only_when_present():
    data = encoded(Image.fromarray(smooth_rgb()), "JPEG")
    containers.check_complete(data, "JPEG")
    containers.check_complete(data + b"trailing bytes after EOI", "JPEG")
    with pytest.raises(TruncatedImageError):
        containers.check_complete(data[:-2], "JPEG")


@pytest.mark.parametrize("data", [
    b"hello, this is a text file and not a photo\n" * 20,
    np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    b"\x00",
], ids=["text", "random", "one_byte"])
def test_not_an_image_refused(data):
    error = refusal(data)
    assert type(error) is BadImageError and error.code == "bad_image"
    assert "not an image" in str(error) and "JPEG" in str(error)


def test_pixel_cap_checked_from_header_before_decoding():
    """The image data of this file is invalid: a `too_large` answer proves nothing was decoded."""
    data = png_header_only(3000, 2000)
    error = refusal(data, max_pixels=1_000_000)
    assert isinstance(error, TooLargeError) and error.code == "too_large"
    assert "3000 x 2000" in str(error)
    assert isinstance(refusal(data, max_pixels=10_000_000), BadImageError)  # decoding was tried


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decompression_bomb_refused(fmt):
    side = 40_000  # 1.6 gigapixels, beyond Pillow's own DecompressionBombError threshold too
    if fmt == "PNG":
        data = png_header_only(side, side)
    else:
        data = with_jpeg_size(encoded(Image.fromarray(smooth_rgb()), "JPEG"), side, side)
    for max_pixels in (50_000_000, side * side * 2):  # ours, then Pillow's guard
        error = refusal(data, max_pixels=max_pixels)
        assert isinstance(error, TooLargeError) and error.code == "too_large"


def two_frames() -> list[Image.Image]:
    first = Image.fromarray(smooth_rgb())
    return [first, ImageOps.invert(first)]


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animated_webp_and_apng_refused(fmt):
    first, second = two_frames()
    data = encoded(first, fmt, save_all=True, append_images=[second], duration=100)
    error = refusal(data)
    assert isinstance(error, AnimatedImageError) and error.code == "bad_image"
    assert "2 frames" in str(error)


def test_animated_gif_refused_naming_gif():
    first, second = two_frames()
    data = encoded(first, "GIF", save_all=True, append_images=[second], duration=100)
    error = refusal(data)
    assert isinstance(error, AnimatedImageError) and error.code == "bad_image"
    assert "animated GIF" in str(error) and "2 frames" in str(error)


@pytest.mark.parametrize("brands, name", [
    (b"heic\x00\x00\x00\x00mif1heic", "HEIC"),
    (b"mif1\x00\x00\x00\x00mif1heix", "HEIC"),
    (b"avif\x00\x00\x00\x00avifmif1", "AVIF"),
])
def test_damaged_heif_family_refused_naming_the_format(brands, name):
    box = b"ftyp" + brands
    data = struct.pack(">I", len(box) + 4) + box + b"\x00\x00\x00\x08meta" + bytes(200)
    error = refusal(data)
    assert isinstance(error, BadImageError) and error.code == "bad_image"
    assert f"damaged {name} file" in str(error)


def test_pil_image_in_unsupported_format_refused():
    icon = Image.open(io.BytesIO(encoded(Image.fromarray(smooth_rgb()), "ICO")))
    assert isinstance(refusal(icon), UnsupportedFormatError)


# ---------------------------------------------------------------- pixels in

@pytest.mark.parametrize("height, width", [(24, 32), (1, 1), (1, 5), (5, 1)])
def test_decoded_layout_and_range(height, width):
    source = random_rgb(height, width)
    decoded = decode_image(encoded(Image.fromarray(source), "PNG"))
    assert decoded.pixels.dtype == torch.float32 and decoded.pixels.shape == (3, height, width)
    assert decoded.pixels.is_contiguous() and decoded.size == (width, height)
    assert decoded.alpha is None
    assert (decoded.format, decoded.mime, decoded.lossless) == ("PNG", "image/png", True)
    assert 0.0 <= decoded.pixels.min() and decoded.pixels.max() <= 1.0
    np.testing.assert_array_equal(to_uint8(decoded.pixels), source)


def test_cmyk_jpeg_without_profile_converts_to_rgb():
    """Pillow writes and reads Adobe (inverted) CMYK JPEGs; colours must come out right, not
    inverted: white paper stays white, full cyan ink is cyan, full black ink is black."""
    patches = {(0, 0, 0, 0): (255, 255, 255), (255, 0, 0, 0): (0, 255, 255),
               (0, 255, 0, 0): (255, 0, 255), (0, 0, 255, 0): (255, 255, 0),
               (0, 0, 0, 255): (0, 0, 0)}
    patch = 16
    cmyk = Image.new("CMYK", (patch * len(patches), patch))
    for index, ink in enumerate(patches):
        cmyk.paste(ink, (index * patch, 0, (index + 1) * patch, patch))
    data = encoded(cmyk, "JPEG", quality=95)
    assert b"Adobe" in data
    decoded = decode_image(data)
    assert decoded.source_mode == "CMYK" and decoded.format == "JPEG"
    rgb = to_uint8(decoded.pixels).astype(int)
    for index, expected in enumerate(patches.values()):
        centre = rgb[patch // 2, index * patch + patch // 2]
        assert np.abs(centre - expected).max() <= 6, (index, centre, expected)


def test_cmyk_jpeg_with_profile_converts_through_the_profile():
    cmyk = Image.new("CMYK", (16, 16), (255, 0, 0, 0))  # pure cyan ink
    decoded = decode_image(encoded(cmyk, "JPEG", quality=95, icc_profile=flat_cmyk_icc()))
    rgb = to_uint8(decoded.pixels).astype(int)
    assert np.abs(rgb - 119).max() <= 2  # the profile says every ink mix is L*=50 grey: sRGB 119
    assert decoded.icc_profile is None  # the CMYK profile does not describe the RGB pixels


def test_16_bit_png_keeps_16_bit_precision():
    values = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 7 + 20_000).astype(np.uint16)
    data = encoded(Image.fromarray(values), "PNG")
    decoded = decode_image(data)
    assert decoded.bits_per_channel == 16 and decoded.is_greyscale
    recovered = (decoded.pixels * 65535).round().to(torch.int64).numpy()
    for channel in recovered:
        np.testing.assert_array_equal(channel, values)  # consecutive values 7 apart stay distinct
    assert len(np.unique(recovered[0])) == values.size  # 8 bits could hold at most 256
    out = Image.open(io.BytesIO(encode_image(decoded.pixels, decoded).data))
    assert out.mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(out), values)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_greyscale_decodes_to_equal_channels_and_stays_greyscale(fmt):
    grey = smooth_rgb()[:, :, 0]
    decoded = decode_image(encoded(Image.fromarray(grey), fmt, quality=95))
    assert decoded.is_greyscale and decoded.source_mode == "L"
    assert torch.equal(decoded.pixels[0], decoded.pixels[1])
    assert torch.equal(decoded.pixels[1], decoded.pixels[2])
    out = Image.open(io.BytesIO(encode_image(decoded.pixels, decoded).data))
    assert out.mode == "L" and out.format == fmt
    tinted = decoded.pixels.clone()
    tinted[0] += 0.1  # protection that adds colour gets a colour file
    assert Image.open(io.BytesIO(encode_image(tinted, decoded).data)).mode == "RGB"


def test_palette_with_transparency_gives_alpha():
    indices = np.tile(np.arange(4, dtype=np.uint8), (8, 4))  # 8 x 16, columns cycle 0..3
    image = Image.fromarray(indices, mode="P")
    palette = [10, 20, 30, 200, 0, 0, 0, 200, 0, 0, 0, 200]
    image.putpalette(palette)
    image.info["transparency"] = 0
    decoded = decode_image(encoded(image, "PNG", transparency=0))
    assert decoded.source_mode == "P" and decoded.alpha is not None
    alpha = decoded.alpha[0].numpy()
    np.testing.assert_array_equal(alpha, (indices != 0).astype(np.float32))
    rgb = to_uint8(decoded.pixels)
    np.testing.assert_array_equal(rgb, np.array(palette, np.uint8).reshape(4, 3)[indices])


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_png_round_trip_is_bit_exact(mode):
    rng = np.random.default_rng(2)
    channels = 4 if mode == "RGBA" else 2
    source = rng.integers(0, 256, (24, 32, channels), dtype=np.uint8)
    source[0, 0, -1] = 0  # a fully transparent pixel keeps its colour too
    decoded = decode_image(encoded(Image.fromarray(source), "PNG"))
    assert decoded.alpha is not None and decoded.alpha.shape == (1, 24, 32)
    out = Image.open(io.BytesIO(encode_image(decoded.pixels, decoded).data))
    assert out.format == "PNG" and out.mode == mode
    np.testing.assert_array_equal(np.asarray(out), source)


#: Pillow transposition that stores an upright picture under each EXIF orientation (the inverse
#: of what a viewer applies).
STORE_FOR_ORIENTATION = {
    1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270,
}


def stored_with_orientation(upright: Image.Image, orientation: int, fmt: str, **options) -> bytes:
    transpose = STORE_FOR_ORIENTATION[orientation]
    stored = upright if transpose is None else upright.transpose(transpose)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encoded(stored, fmt, exif=exif, **options)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_upright_pixels(orientation):
    upright = random_rgb(height=5, width=7, seed=orientation)  # not square: rotations show
    data = stored_with_orientation(Image.fromarray(upright), orientation, "PNG")
    decoded = decode_image(data)
    assert decoded.orientation == orientation and decoded.size == (7, 5)
    np.testing.assert_array_equal(to_uint8(decoded.pixels), upright)
    viewer = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))  # what Pillow would show
    np.testing.assert_array_equal(np.asarray(viewer), upright)
    out = Image.open(io.BytesIO(encode_image(decoded.pixels, decoded).data))
    assert ExifTags.Base.Orientation not in out.getexif()  # baked in
    np.testing.assert_array_equal(np.asarray(out), upright)


def test_jpeg_orientation_6_gives_upright_pixels():
    upright = smooth_rgb(64, 96)
    decoded = decode_image(stored_with_orientation(Image.fromarray(upright), 6, "JPEG", quality=95))
    assert decoded.size == (96, 64)
    assert np.abs(to_uint8(decoded.pixels).astype(int) - upright).max() <= 8


def test_pil_image_input_without_format_becomes_png():
    source = random_rgb()
    decoded = decode_image(Image.fromarray(source))
    assert decoded.format == "PNG" and decoded.source_bytes is None
    np.testing.assert_array_equal(to_uint8(decoded.pixels), source)
    out = strip_metadata_only(decoded)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(out.data))), source)


# ---------------------------------------------------------------- pixels out

def test_jpeg_round_trip_psnr_and_size(faces_dir):
    decoded = decode_image(faces_dir / PORTRAIT)
    result = encode_image(decoded.pixels, decoded)
    assert (result.format, result.mime) == ("JPEG", "image/jpeg")
    out_image = Image.open(io.BytesIO(result.data))
    assert out_image.size == decoded.size
    assert JpegImagePlugin.get_sampling(out_image) == 0  # 4:4:4 at quality 95
    again = decode_image(result.data)
    assert psnr_db(decoded.pixels, again.pixels) >= MIN_JPEG_PSNR_DB
    assert again.icc_profile == decoded.icc_profile


def test_png_round_trip_is_bit_exact():
    source = random_rgb(seed=3)
    decoded = decode_image(encoded(Image.fromarray(source), "PNG"))
    out = Image.open(io.BytesIO(encode_image(decoded.pixels, decoded).data))
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), source)


def test_quantisation_rounds_to_nearest():
    decoded = decode_image(encoded(Image.fromarray(random_rgb()), "PNG"))
    pixels = torch.full_like(decoded.pixels, 100.4 / 255)
    pixels[:, 0, 0] = 100.6 / 255
    pixels[:, 0, 1] = 2.0  # clipped to white
    out = np.asarray(Image.open(io.BytesIO(encode_image(pixels, decoded).data)))
    assert out[1, 1, 0] == 100 and out[0, 0, 0] == 101 and out[0, 1, 0] == 255


def test_encode_rejects_wrong_shape_and_nan():
    decoded = decode_image(encoded(Image.fromarray(random_rgb()), "PNG"))
    with pytest.raises(ValueError, match="pixel size"):
        encode_image(decoded.pixels[:, 1:], decoded)
    broken = decoded.pixels.clone()
    broken[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encode_image(broken, decoded)


@pytest.mark.parametrize("lossless", [True, False])
def test_webp_stays_webp_lossless_when_source_was(lossless):
    source = smooth_rgb()
    data = encoded(Image.fromarray(source), "WEBP", lossless=lossless, quality=90)
    decoded = decode_image(data)
    assert decoded.format == "WEBP" and decoded.lossless is lossless
    result = encode_image(decoded.pixels, decoded)
    assert result.mime == "image/webp" and (b"VP8L" in result.data[:64]) is lossless
    out = np.asarray(Image.open(io.BytesIO(result.data)))
    if lossless:
        np.testing.assert_array_equal(out, source)
    else:
        assert psnr_db(decoded.pixels, torch.from_numpy(out.copy()).permute(2, 0, 1) / 255.0) >= 35


def riff_chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + bytes(len(payload) & 1)


@pytest.mark.parametrize("lossless", [True, False])
def test_single_frame_animation_webp_lossless_is_told_from_its_frame(lossless):
    """An animated-container WebP with one frame (VP8X + ANIM + ANMF) is a still photo."""
    width, height = 30, 20
    still = encoded(Image.fromarray(random_rgb(height, width)), "WEBP", lossless=lossless)
    image_chunk = still[12:]  # the VP8L or "VP8 " chunk
    def three_bytes(value: int) -> bytes:
        return value.to_bytes(3, "little")
    animation_flag = 0x02
    vp8x = bytes((animation_flag, 0, 0, 0)) + three_bytes(width - 1) + three_bytes(height - 1)
    frame = (three_bytes(0) + three_bytes(0) + three_bytes(width - 1) + three_bytes(height - 1)
             + three_bytes(100) + bytes(1) + image_chunk)
    body = (b"WEBP" + riff_chunk(b"VP8X", vp8x) + riff_chunk(b"ANIM", bytes(4) + b"\x00\x00")
            + riff_chunk(b"ANMF", frame))
    data = b"RIFF" + struct.pack("<I", len(body)) + body
    assert containers.webp_is_lossless(data) is lossless
    decoded = decode_image(data)
    assert decoded.lossless is lossless and decoded.size == (width, height)


def test_webp_content_named_jpg_stays_webp(faces_dir):
    decoded = decode_image(faces_dir / WEBP_NAMED_JPG)
    assert decoded.format == "WEBP"
    assert Image.open(io.BytesIO(encode_image(decoded.pixels, decoded).data)).format == "WEBP"


def test_icc_profile_kept():
    icc = srgb_icc()
    decoded = decode_image(encoded(Image.fromarray(smooth_rgb()), "JPEG", icc_profile=icc))
    assert decoded.icc_profile == icc
    out = Image.open(io.BytesIO(encode_image(decoded.pixels, decoded).data))
    assert out.info.get("icc_profile") == icc


# ---------------------------------------------------------------- metadata out

def photo_with_private_metadata(fmt: str, orientation: int = 1) -> bytes:
    """A photo carrying GPS, serial numbers, owner and artist names, a maker note, XMP, and per
    format a comment (JPEG), a text chunk (PNG) and an EXIF thumbnail (JPEG); plus an ICC
    profile."""
    image = Image.fromarray(smooth_rgb())
    exif = private_exif(orientation)
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/">{SECRETS["xmp"]}</x:xmpmeta>'.encode()
    options: dict = {"icc_profile": srgb_icc()}
    if fmt == "JPEG":
        thumbnail = encoded(Image.fromarray(smooth_rgb(8, 8)), "JPEG")
        options.update(exif=exif_bytes_with_thumbnail(exif, thumbnail), xmp=xmp,
                       comment=SECRETS["comment"], quality=95)
    elif fmt == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_text("Author", SECRETS["png_text"])
        text.add_itxt("XML:com.adobe.xmp", xmp.decode())
        options.update(exif=exif, pnginfo=text)
    else:
        options.update(exif=exif, xmp=xmp, lossless=True)
    return encoded(image, fmt, **options)


def assert_no_private_metadata(data: bytes, allowed_orientation: int | None = None):
    for name, secret in SECRETS.items():
        assert secret.encode() not in data, f"{name} metadata left in the output"
    image = Image.open(io.BytesIO(data))
    exif = image.getexif()
    expected = ({} if allowed_orientation is None
                else {ExifTags.Base.Orientation: allowed_orientation})
    assert dict(exif) == expected
    assert not exif.get_ifd(ExifTags.IFD.GPSInfo) and not exif.get_ifd(ExifTags.IFD.Exif)
    assert not exif.get_ifd(ExifTags.IFD.IFD1)  # no thumbnail
    assert not {"xmp", "comment", "Author", "XML:com.adobe.xmp"} & set(image.info)
    assert image.info.get("icc_profile") == srgb_icc()


def test_private_metadata_is_really_in_the_inputs():
    """Guards the two tests below: the inputs they clean do carry every planted secret."""
    jpeg = photo_with_private_metadata("JPEG")
    for fmt in ("JPEG", "PNG", "WEBP"):
        data = photo_with_private_metadata(fmt)
        for name in ("artist", "body_serial", "lens_serial", "owner", "maker_note", "gps", "xmp"):
            assert SECRETS[name].encode() in data, (fmt, name)
    assert SECRETS["comment"].encode() in jpeg
    assert SECRETS["png_text"].encode() in photo_with_private_metadata("PNG")
    thumbnail = Image.open(io.BytesIO(jpeg)).getexif().get_ifd(ExifTags.IFD.IFD1)
    assert thumbnail.get(0x0202, 0) > 0


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_encode_removes_private_metadata(fmt):
    decoded = decode_image(photo_with_private_metadata(fmt, orientation=6))
    assert decoded.exif.get_ifd(ExifTags.IFD.GPSInfo)  # read, for callers to report
    result = encode_image(decoded.pixels, decoded)
    assert result.format == fmt
    assert_no_private_metadata(result.data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_strip_metadata_only_keeps_pixels_identical(fmt, orientation):
    """No face found: metadata goes, the compressed image data stays, so even JPEG pixels are
    bit-identical; the only tag kept is a non-upright orientation, which the stored pixels need."""
    source = photo_with_private_metadata(fmt, orientation)
    decoded = decode_image(source)
    result = strip_metadata_only(decoded)
    assert (result.format, result.mime) == (fmt, decoded.mime)
    assert_no_private_metadata(result.data, None if orientation == 1 else orientation)
    stored_before = np.asarray(Image.open(io.BytesIO(source)))
    stored_after = np.asarray(Image.open(io.BytesIO(result.data)))
    np.testing.assert_array_equal(stored_after, stored_before)
    again = decode_image(result.data)
    assert torch.equal(again.pixels, decoded.pixels)  # upright the same way
    assert len(result.data) < len(source)
    if fmt == "WEBP":  # the extended header's flags must match the chunks that remain
        vp8x_flags = result.data[20]
        assert result.data[12:16] == b"VP8X"
        assert vp8x_flags & WEBP_XMP_FLAG == 0
        assert bool(vp8x_flags & WEBP_EXIF_FLAG) == (orientation != 1)


def test_strip_metadata_only_drops_jfif_thumbnail():
    source = encoded(Image.fromarray(smooth_rgb()), "JPEG", quality=95)
    app0_end = 4 + int.from_bytes(source[4:6], "big")
    assert source[6:11] == b"JFIF\x00"
    thumbnail = bytes([0x5A, 0xA5, 0x3C]) * 4  # 2 x 2 RGB pixels
    app0 = source[6:6 + 12] + bytes((2, 2)) + thumbnail  # identifier..density, then 2 x 2 thumb
    with_thumbnail = (source[:2] + b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0
                      + source[app0_end:])
    decoded = decode_image(with_thumbnail)
    result = strip_metadata_only(decoded).data
    assert thumbnail not in result and result[6:11] == b"JFIF\x00"
    assert result[18:20] == b"\x00\x00"  # thumbnail width and height
    assert torch.equal(decode_image(result).pixels, decoded.pixels)


def test_strip_metadata_only_drops_mpo_secondary_images():
    first, second = two_frames()
    source = encoded(first, "MPO", save_all=True, append_images=[second])
    decoded = decode_image(source)
    assert decoded.format == "JPEG"
    result = strip_metadata_only(decoded)
    out = Image.open(io.BytesIO(result.data))
    assert out.format == "JPEG" and getattr(out, "n_frames", 1) == 1
    assert torch.equal(decode_image(result.data).pixels, decoded.pixels)


def test_decoded_image_is_frozen():
    decoded = decode_image(encoded(Image.fromarray(random_rgb()), "PNG"))
    assert isinstance(decoded, DecodedImage)
    with pytest.raises(AttributeError):
        decoded.format = "JPEG"


# ---------------------------------------------------------------- JPEG quality kept

@pytest.mark.parametrize("quality", [20, 50, 60, 75, 85, 92, 95, 100])
def test_jpeg_quality_is_read_back_from_the_quantisation_tables(quality):
    data = encoded(Image.fromarray(smooth_rgb()), "JPEG", quality=quality)
    assert decode_image(data).jpeg_quality == quality


def test_jpeg_quality_of_an_editors_own_tables_is_the_nearest_libjpeg_one():
    from lowkey_engine.images.jpeg_tables import estimate_quality, scaled_tables

    # every step 5 (an editor's flat table): the fine high-frequency steps of a high quality
    # (libjpeg's 97 runs from 1 to 7), far from quality 75 (6 to 62)
    flat = estimate_quality({0: [5] * 64, 1: [5] * 64})
    assert 90 <= flat <= 100
    assert estimate_quality({}) is None and estimate_quality({0: [0] * 64}) is None
    luma, chroma = scaled_tables(83)
    assert estimate_quality({0: list(luma), 1: list(chroma)}) == 83


def test_protected_jpeg_is_saved_at_its_own_quality_within_bounds_and_subsampling():
    from lowkey_engine.images.encode import JPEG_QUALITY_BOUNDS

    low, high = JPEG_QUALITY_BOUNDS
    for quality, subsampling, expected in ((40, 2, low), (80, 2, 80), (100, 0, high), (88, 1, 88)):
        source = encoded(Image.fromarray(smooth_rgb()), "JPEG", quality=quality, subsampling=subsampling)
        decoded = decode_image(source)
        assert decoded.jpeg_subsampling == subsampling
        out = decode_image(encode_image(decoded.pixels, decoded).data)
        assert (out.jpeg_quality, out.jpeg_subsampling) == (expected, subsampling)
    png = decode_image(encoded(Image.fromarray(smooth_rgb()), "PNG"))
    assert png.jpeg_quality is None and png.jpeg_subsampling is None
