"""Hypothesis strategies and settings profiles shared by the fuzz tests and `python -m fuzz.run`.

Every strategy draws a `Case`: what to feed the code under test, a label saying how it was made
(for reports), and optionally what the outcome must be. The checks live in `fuzz.targets`.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from lowkey_daemon import protocol
from lowkey_daemon.protocol import Cancel, Hello, ProtectRequest

from .seeds import Seeds, claim_dimensions

# --------------------------------------------------------------------------- settings profiles

#: Environment variable naming the profile the tests run under (default CI_PROFILE).
PROFILE_ENV = "LOWKEY_FUZZ_PROFILE"
#: CI: a few hundred cases per target, the same ones every run (derandomized).
CI_PROFILE = "ci"
#: The long run (`python -m fuzz.run` sets the count and the seed itself).
LONG_PROFILE = "long"
CI_EXAMPLES = 200
LONG_EXAMPLES = 10_000

# Time is bounded by pytest-timeout in the tests and measured per case by the long run, not by
# hypothesis' deadline (which turns a busy CI machine into flaky failures). Generating from
# real photos is slower than hypothesis expects; that is the point, not a problem.
_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.large_base_example])
settings.register_profile(CI_PROFILE, max_examples=CI_EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile(LONG_PROFILE, max_examples=LONG_EXAMPLES, **_COMMON)


def fuzz_settings(examples_scale: float = 1.0) -> settings:
    """The profile named by $LOWKEY_FUZZ_PROFILE (default CI_PROFILE), with max_examples scaled
    (e.g. 0.2 for a target whose cases each open a socket)."""
    profile = settings.get_profile(os.environ.get(PROFILE_ENV, CI_PROFILE))
    return settings(profile, max_examples=max(1, round(profile.max_examples * examples_scale)))


# --------------------------------------------------------------------------- cases

#: Characters of a value shown in a case's repr.
_REPR_CHARS = 160


@dataclass(frozen=True)
class Case:
    """label: how the input was made; value: the input; expect: the outcome it must have when
    that is known (`fuzz.targets` names them), else None (any typed outcome is fine)."""

    label: str
    value: Any
    expect: str | None = None

    def __repr__(self) -> str:
        shown = repr(self.value)
        if len(shown) > _REPR_CHARS:
            shown = shown[:_REPR_CHARS] + f"... ({len(self.value)} long)"
        return f"Case({self.label!r}, {shown}, expect={self.expect!r})"


#: Outcomes a case may require (checked by fuzz.targets).
EXPECT_IMAGE_ERROR = "image_error"   # refused with an ImageError
EXPECT_TOO_LARGE = "too_large"       # refused with a TooLargeError
EXPECT_DECODED = "decoded"           # decoded
EXPECT_CLOSED_TOO_BIG = "closed_1009"  # a frame above the daemon's frame limit


# --------------------------------------------------------------------------- text and JSON

#: A UTF-16 surrogate on its own: JSON can carry one ("\\ud800"), UTF-8 cannot.
lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


@functools.lru_cache(maxsize=None)   # built once: hypothesis validates every new strategy
def texts(min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    """Any text of min_size..max_size (>= 1) characters, sometimes ending in a lone surrogate
    (what a JSON "\\udXXX" escape decodes to)."""
    plain = st.text(min_size=min_size, max_size=max_size)
    spliced = st.tuples(plain, lone_surrogates).map(lambda parts: "".join(parts)[-max_size:])
    return st.one_of(plain, spliced)


@functools.lru_cache(maxsize=None)   # built once: hypothesis validates every new strategy
def json_values(max_leaves: int = 5) -> st.SearchStrategy[Any]:
    """Values `json.loads` can return (finite numbers; NaN and infinities come from frame bodies)."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                        st.floats(allow_nan=False, allow_infinity=False), texts())
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(texts(max_size=8), inner, max_size=4)),
        max_leaves=max_leaves)


# --------------------------------------------------------------------------- client headers

#: Fields of each client message: (max characters, min characters).
MESSAGE_FIELDS: dict[str, dict[str, tuple[int, int]]] = {
    "hello": {"token": (protocol.MAX_TOKEN_CHARS, 0), "client": (protocol.MAX_CLIENT_NAME_CHARS, 0)},
    "protect": {"id": (protocol.MAX_ID_CHARS, 1), "filename": (protocol.MAX_FILENAME_CHARS, 0),
                "mime": (protocol.MAX_MIME_CHARS, 0), "preset": (protocol.MAX_PRESET_CHARS, 0)},
    "cancel": {"id": (protocol.MAX_ID_CHARS, 1)},
}
_ALL_FIELDS = {name: limits for fields in MESSAGE_FIELDS.values() for name, limits in fields.items()}
#: `type` values that are not client messages but look like one.
_NEAR_TYPES = ("welcome", "result", "progress", "error", "HELLO", "Protect", "cancel ", "")
#: Longest extra (oversized) part of a string field, characters.
_OVERSIZE_CHARS = 40


@functools.lru_cache(maxsize=None)   # built once: hypothesis validates every new strategy
def field_values(max_chars: int, min_chars: int = 0) -> st.SearchStrategy[Any]:
    """A header field: a string of a valid length, one too long (or too short), or another type."""
    too_long = texts(max_chars + 1, max_chars + _OVERSIZE_CHARS)
    wrong_length = st.one_of(too_long, st.just("")) if min_chars else too_long
    return st.one_of(texts(min_chars, max_chars), wrong_length, json_values(max_leaves=3))


@st.composite
def client_headers(draw) -> dict[str, Any]:
    """A decoded header: a known or unknown `type` (or none), each field present or missing and
    valid, oversized or of the wrong type, plus extra fields."""
    kind = draw(st.one_of(st.sampled_from(sorted(MESSAGE_FIELDS)), st.sampled_from(_NEAR_TYPES),
                          json_values(max_leaves=2)))
    header = draw(st.dictionaries(texts(max_size=10), json_values(max_leaves=2), max_size=2))
    if draw(st.booleans()):
        header["type"] = kind
    fields = MESSAGE_FIELDS.get(kind, _ALL_FIELDS) if isinstance(kind, str) else _ALL_FIELDS
    for name, (max_chars, min_chars) in fields.items():
        if draw(st.booleans()):
            header[name] = draw(field_values(max_chars, min_chars))
    return header


payloads = st.one_of(st.just(b""), st.binary(min_size=1, max_size=32))


def header_cases() -> st.SearchStrategy[Case]:
    """(header, payload) pairs for `parse_client_message`."""
    return st.tuples(client_headers(), payloads).map(lambda pair: Case("header", pair))


def client_messages() -> st.SearchStrategy[Hello | ProtectRequest | Cancel]:
    """Valid client messages (for the round trip)."""
    def text(name: str) -> st.SearchStrategy[str]:
        max_chars, min_chars = _ALL_FIELDS[name]
        return st.text(min_size=min_chars, max_size=max_chars)
    return st.one_of(
        st.builds(Hello, token=text("token"), client=text("client")),
        st.builds(ProtectRequest, id=text("id"), filename=text("filename"), mime=text("mime"),
                  preset=st.none() | text("preset"), payload=st.binary(min_size=1, max_size=64)),
        st.builds(Cancel, id=text("id")))


def client_header(message: Hello | ProtectRequest | Cancel) -> tuple[dict[str, Any], bytes]:
    """The header and payload a client sends for `message` (the inverse of parsing it)."""
    if isinstance(message, Hello):
        return {"type": "hello", "token": message.token, "client": message.client}, b""
    if isinstance(message, Cancel):
        return {"type": "cancel", "id": message.id}, b""
    return ({"type": "protect", "id": message.id, "filename": message.filename,
             "mime": message.mime, "preset": message.preset}, message.payload)


# --------------------------------------------------------------------------- frames

_LENGTH = struct.Struct(">I")
_MAX_LENGTH = 2 ** 32 - 1
#: Byte sequences that are not UTF-8: a lone continuation byte, a cut-off sequence, an encoded
#: surrogate (CESU-8), an overlong encoding, bytes UTF-8 never uses.
_NOT_UTF8 = (b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xff", b"\xfe")
#: Frame bodies that are not JSON the parser should accept, or are JSON of another type.
_ODD_BODIES = (b"", b"{", b"}", b"{nope", b"null", b"true", b"0", b'"text"', b"[]", b"[{}]",
               b'{"type": NaN}', b'{"type": Infinity}', b'{"a": -Infinity}', b"NaN",
               b'{"type":"hello","type":"protect"}', b'{"type":"hello"} trailing',
               b"\xef\xbb\xbf{}", b'{"type":"cancel","id":"\\ud800"}',
               b'{"type":"protect","id":"x","filename":"\\udfff"}')


def encode_header(header: dict[str, Any], ascii_only: bool) -> bytes:
    """A header as a client could write it: ASCII JSON (lone surrogates as \\u escapes) or UTF-8
    JSON (lone surrogates as their CESU-8 bytes, which is not UTF-8)."""
    if ascii_only:
        return json.dumps(header).encode("ascii")
    return json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogatepass")


def frame_of(body: bytes, payload: bytes = b"") -> bytes:
    return _LENGTH.pack(len(body)) + body + payload


@st.composite
def nested_bodies(draw, max_header_bytes: int) -> bytes:
    """Deeply nested JSON ([[[...]]], {"a":{"a":...}}) up to the header limit."""
    opener, closer = draw(st.sampled_from(((b"[", b"]"), (b'{"a":', b"}"))))
    depth = draw(st.integers(1, max(1, max_header_bytes // (len(opener) + len(closer)))))
    return opener * depth + b"0" + closer * depth


@st.composite
def odd_bodies(draw, max_header_bytes: int) -> bytes:
    """Bodies that are not UTF-8, not JSON, JSON of the wrong type, or extreme JSON."""
    return draw(st.one_of(
        st.sampled_from(_ODD_BODIES),
        nested_bodies(max_header_bytes),
        st.integers(1, 2 * 4300).map(lambda digits: b'{"type":' + b"9" * digits + b"}"),
        st.text(max_size=40).map(lambda text: text.encode("utf-8")),
        json_values().filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
        st.tuples(client_headers(), st.sampled_from(_NOT_UTF8), st.integers(0, 64)).map(
            lambda t: _insert(encode_header(t[0], True), t[2], t[1])),
    ))


def _insert(data: bytes, at: int, chunk: bytes) -> bytes:
    at = min(at, len(data))
    return data[:at] + chunk + data[at:]


@st.composite
def frame_mutations(draw, frame: bytes) -> tuple[str, bytes]:
    """One change to a frame: its declared length, a cut, a bit flip, an overwrite."""
    kind = draw(st.sampled_from(("length", "truncate", "flip", "overwrite", "append")))
    if kind == "length":
        length = draw(st.one_of(st.integers(0, _MAX_LENGTH),
                                st.sampled_from((0, 1, len(frame) - 5, len(frame) - 3, _MAX_LENGTH))))
        return f"length={length}", _LENGTH.pack(max(0, length)) + frame[4:]
    if kind == "truncate":
        cut = draw(st.integers(0, max(0, len(frame) - 1)))
        return f"truncate@{cut}", frame[:cut]
    if not frame:
        return "empty", frame
    at = draw(st.integers(0, len(frame) - 1))
    if kind == "flip":
        bit = draw(st.integers(0, 7))
        return f"flip@{at}.{bit}", frame[:at] + bytes((frame[at] ^ (1 << bit),)) + frame[at + 1:]
    chunk = draw(st.binary(min_size=1, max_size=8))
    if kind == "overwrite":
        return f"overwrite@{at}", frame[:at] + chunk + frame[at + len(chunk):]
    return "append", frame + chunk


@st.composite
def frame_cases(draw, max_header_bytes: int) -> Case:
    """Client frames: arbitrary bytes; valid messages and headers of every shape, encoded as
    clients would, then maybe mutated; frames whose body is not UTF-8 JSON of an object."""
    kind = draw(st.sampled_from(("arbitrary", "valid", "header", "odd-body")))
    if kind == "arbitrary":
        return Case(kind, draw(st.binary(max_size=64)))
    if kind == "odd-body":
        frame, label = frame_of(draw(odd_bodies(max_header_bytes)), draw(payloads)), kind
    elif kind == "valid":
        header, payload = client_header(draw(client_messages()))
        frame, label = frame_of(encode_header(header, draw(st.booleans())), payload), kind
    else:
        ascii_only = draw(st.booleans())
        frame = frame_of(encode_header(draw(client_headers()), ascii_only), draw(payloads))
        label = "header-ascii" if ascii_only else "header-utf8"
    for _ in range(draw(st.integers(0, 2))):
        change, frame = draw(frame_mutations(frame))
        label += f"|{change}"
    return Case(label, frame)


@st.composite
def socket_cases(draw, max_header_bytes: int, max_frame_bytes: int) -> Case:
    """What a client may send as one WebSocket message: a binary frame (as `frame_cases`), a
    text frame, or a binary frame above the daemon's frame limit. value: (message, after_hello)
    where message is bytes (binary frame) or str (text frame)."""
    after_hello = draw(st.booleans())
    kind = draw(st.sampled_from(("frame", "frame", "frame", "text", "too-big")))
    if kind == "text":
        case = Case("text", draw(st.text(max_size=64)))
    elif kind == "too-big":
        size = draw(st.integers(max_frame_bytes + 1, max_frame_bytes + 1024))
        case = Case("too-big", frame_of(b"{}", bytes(size - 6)), EXPECT_CLOSED_TOO_BIG)
    else:
        case = draw(frame_cases(max_header_bytes))
    prefix = "after-hello" if after_hello else "first"
    return Case(f"{prefix}|{case.label}", (case.value, after_hello), case.expect)


# --------------------------------------------------------------------------- image files

#: How many mutations one damaged file gets at most.
MAX_MUTATIONS = 3
#: Mutations land in a file's first bytes this often (headers and metadata live there).
HEADER_REGION_BYTES = 2048
#: Chunks written into files: random bytes or markers that mean something in JPEG/PNG/WebP.
_MARKERS = (b"\xff\xd9", b"\xff\xda", b"\xff\xc0", b"\xff\xe1", b"\xff\xff\xff\xff",
            b"\x00\x00\x00\x00", b"IEND", b"IDAT", b"acTL", b"VP8X", b"ANMF", b"\x7f\xff\xff\xff")
_MUTATIONS = ("truncate", "flip", "overwrite", "insert", "delete", "duplicate", "append")
#: Leading bytes of other kinds of file, followed by random bytes.
_MAGICS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x01\x00\x00WEBP", b"GIF89a", b"BM",
           b"II*\x00", b"MM\x00*", b"%PDF-1.7\n", b"\x00\x00\x00\x18ftypheic", b"\x00\x00\x00\x1cftypavif",
           b"\x00\x00\x00\x0cJXL \r\n\x87\n", b"\xff\x0a", b"<svg xmlns='http://www.w3.org/2000/svg'>",
           b"PK\x03\x04", b"8BPS", b"\x00\x00\x01\x00", b"\x1f\x8b\x08")
#: A fixed timestamp for the zip files (reproducible bytes).
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def _offsets(size: int) -> st.SearchStrategy[int]:
    """A position in a file of `size` bytes, often in its header region."""
    return st.one_of(st.integers(0, min(size, HEADER_REGION_BYTES) - 1), st.integers(0, size - 1))


def _chunks() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(min_size=1, max_size=32), st.sampled_from(_MARKERS))


@st.composite
def damaged_files(draw, seeds: Seeds) -> Case:
    """A seed file after 1..MAX_MUTATIONS truncations, bit flips, overwrites, insertions,
    deletions, duplicated ranges or appended bytes."""
    name = draw(st.sampled_from(sorted(seeds.all)))
    data, label = seeds.all[name], name
    for _ in range(draw(st.integers(1, MAX_MUTATIONS))):
        if not data:
            break
        kind = draw(st.sampled_from(_MUTATIONS))
        at = draw(_offsets(len(data)))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip":
            bit = draw(st.integers(0, 7))
            data = data[:at] + bytes((data[at] ^ (1 << bit),)) + data[at + 1:]
        elif kind == "overwrite":
            chunk = draw(_chunks())
            data = data[:at] + chunk + data[at + len(chunk):]
        elif kind == "insert":
            data = _insert(data, at, draw(_chunks()))
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 256)):]
        elif kind == "duplicate":
            length = draw(st.integers(1, 512))
            data = _insert(data, draw(_offsets(len(data))), data[at:at + length])
        else:
            data = data + draw(_chunks())
        label += f"|{kind}@{at}"
    return Case(label, data)


@st.composite
def oversized_headers(draw, seeds: Seeds, max_pixels: int) -> Case:
    """A seed whose header claims other dimensions, often more pixels than `max_pixels`. A still
    PNG (CRC fixed) or JPEG claiming more than `max_pixels` must be refused as too large."""
    name = draw(st.sampled_from(sorted(n for n, d in seeds.all.items()
                                       if claim_dimensions(d, 1, 1) is not None)))
    side = math.isqrt(max_pixels)
    dimension = st.one_of(st.integers(0, 2 ** 16), st.integers(0, 2 ** 31 - 1),
                          st.sampled_from((0, 1, side - 1, side, side + 1)))
    fix_crc = draw(st.booleans())
    data, (width, height) = claim_dimensions(seeds.all[name], draw(dimension), draw(dimension),
                                             fix_crc=fix_crc)
    # Strict only for still photos: an animated PNG also fails its frame checks.
    strict = name in seeds.photos and (name.endswith(".jpg") or (name.endswith(".png") and fix_crc))
    expect = EXPECT_TOO_LARGE if strict and width * height > max_pixels else None
    crc_note = "|bad-crc" if name.endswith(".png") and not fix_crc else ""
    return Case(f"{name}|claims {width}x{height}{crc_note}", data, expect)


def _zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data)
    return buffer.getvalue()


def wrong_type_files(seeds: Seeds) -> st.SearchStrategy[Case]:
    """Files that are not photos the decoder reads: text, random bytes, another format's magic
    followed by random bytes, a zip holding a photo, animated and multi-page images, an icon. Each must
    be refused."""
    refuse = EXPECT_IMAGE_ERROR
    return st.one_of(
        st.text(max_size=256).map(lambda t: Case("text", t.encode("utf-8"), refuse)),
        st.binary(max_size=1024).map(lambda b: Case("random", b, refuse)),
        st.tuples(st.sampled_from(_MAGICS), st.binary(max_size=256)).map(
            lambda t: Case(f"magic {t[0][:12]!r}", t[0] + t[1], refuse)),
        st.sampled_from(sorted(seeds.photos)).map(
            lambda n: Case(f"zip of {n}", _zipped(n, seeds.photos[n]), refuse)),
        st.sampled_from(sorted(seeds.refused)).map(lambda n: Case(n, seeds.refused[n], refuse)),
    )


def image_cases(seeds: Seeds, max_pixels: int) -> st.SearchStrategy[Case]:
    """Everything the image target feeds `decode_image`: intact seeds, damaged ones, oversized
    headers and wrong-type files."""
    intact = st.sampled_from(sorted(seeds.photos)).map(
        lambda n: Case(n, seeds.photos[n], EXPECT_DECODED))
    return st.one_of(intact, damaged_files(seeds), oversized_headers(seeds, max_pixels),
                     wrong_type_files(seeds))
