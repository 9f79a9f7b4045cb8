"""Property-based tests of image decoding on files built from the real face photos.

Every case ends in a decoded image or an ImageError subclass (bad_image, too_large), never another
exception; the decoder's pixel cap bounds memory and time (FUZZ_MAX_PIXELS here). Strategies and
checks are shared with the long run (`python -m fuzz.run`, fuzz/README.md).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz.seeds import build_seeds, claim_dimensions
from fuzz.strategies import (damaged_files, fuzz_settings, image_cases,
                             oversized_headers, wrong_type_files)
from fuzz.targets import FUZZ_MAX_PIXELS, check_decode
from lowkey_engine.images.decode import decode_image
from lowkey_engine.images.errors import AnimatedImageError, TooLargeError, UnsupportedFormatError

pytestmark = [
    pytest.mark.timeout(120),
    # Pillow warns about damaged EXIF it skips and about huge headers; both are refused or
    # handled, and the warnings are not what is under test.
    pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin",
                               "ignore::PIL.Image.DecompressionBombWarning"),
]


@pytest.fixture(scope="module")
def seeds(faces_dir):
    return build_seeds(faces_dir)


def test_seeds_decode_or_are_refused_as_what_they_are(seeds):
    for name, data in seeds.photos.items():
        assert decode_image(data, max_pixels=FUZZ_MAX_PIXELS).format in name.upper().replace(
            "JPG", "JPEG"), name
    for name in ("animated.webp", "animated.png", "animated.gif", "pages.tiff"):
        with pytest.raises(AnimatedImageError):
            decode_image(seeds.refused[name])
    with pytest.raises(UnsupportedFormatError, match="ICO"):
        decode_image(seeds.refused["photo.ico"])


def test_claimed_dimensions_are_what_the_decoder_reads(seeds):
    """The header surgery the oversized cases rely on does what it says, for each format."""
    for name in ("lfw.jpg", "exif-icc.png", "lossy.webp", "lossless-alpha.webp", "exif-icc.webp"):
        data, claimed = claim_dimensions(seeds.photos[name], 3000, 2000)
        assert claimed == (3000, 2000)
        with pytest.raises(TooLargeError, match="3000 x 2000"):
            decode_image(data, max_pixels=FUZZ_MAX_PIXELS)


@fuzz_settings()
@given(data=st.data())
def test_damaged_photos_decode_or_raise_image_errors(seeds, data):
    check_decode(data.draw(damaged_files(seeds)), FUZZ_MAX_PIXELS)


@fuzz_settings(examples_scale=0.5)
@given(data=st.data())
def test_headers_claiming_too_many_pixels_are_refused_before_decoding(seeds, data):
    case = data.draw(oversized_headers(seeds, FUZZ_MAX_PIXELS))
    check_decode(case, FUZZ_MAX_PIXELS)


@fuzz_settings(examples_scale=0.5)
@given(data=st.data())
def test_files_of_another_kind_are_refused(seeds, data):
    check_decode(data.draw(wrong_type_files(seeds)), FUZZ_MAX_PIXELS)


@fuzz_settings(examples_scale=0.5)
@given(data=st.data())
def test_any_image_case(seeds, data):
    """The mix the long run uses (intact seeds included: they must decode)."""
    check_decode(data.draw(image_cases(seeds, FUZZ_MAX_PIXELS)), FUZZ_MAX_PIXELS)

