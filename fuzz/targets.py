"""The properties: what must hold for every case, one check per target.

Each check returns the case's outcome (a short label, counted by the long run) and raises when the
property fails: an AssertionError for a wrong answer, or whatever unexpected exception the code
under test let out (a crash).
"""

from __future__ import annotations

from typing import Any

import torch

from lowkey_daemon import protocol
from lowkey_daemon.protocol import Cancel, ErrorCode, Hello, ProtectRequest, ProtocolError
from lowkey_engine.images.decode import MIME_TYPES, SUPPORTED_FORMATS, DecodedImage, decode_image
from lowkey_engine.images.errors import BadImageError, ImageError, TooLargeError

from .strategies import EXPECT_DECODED, EXPECT_IMAGE_ERROR, EXPECT_TOO_LARGE, Case, client_header

#: Longest refusal message a person may be shown, characters: one or two sentences, whatever
#: the input (a message quotes at most a bounded part of it).
MAX_MESSAGE_CHARS = 1000
#: Header limit a client reading the daemon's answers uses here, bytes.
CLIENT_MAX_HEADER_BYTES = 1 << 20
#: Pixel cap of the image target: the decoder's own cap, set low so that every case stays cheap
#: (a file claiming more is refused from its header; one claiming less is decoded, or refused
#: once its data runs out).
FUZZ_MAX_PIXELS = 4_000_000


# --------------------------------------------------------------------------- protocol

def check_frame(case: Case, max_header_bytes: int) -> str:
    """A client frame is decoded and validated as the daemon does: either a valid message whose
    fields are the header's, or ProtocolError(bad_request) that the daemon can answer."""
    frame: bytes = case.value
    try:
        header, payload = protocol.decode_frame(frame, max_header_bytes)
    except ProtocolError as refused:
        return check_refusal(refused)
    assert isinstance(header, dict) and isinstance(payload, bytes)
    assert frame.endswith(payload) and len(frame) - len(payload) <= 4 + max_header_bytes
    return check_message(Case(case.label, (header, payload)))


def check_message(case: Case) -> str:
    """`parse_client_message` returns a message holding the header's fields within their limits
    (and the daemon can write its answers to it), or raises ProtocolError(bad_request)."""
    header, payload = case.value
    try:
        message = protocol.parse_client_message(header, payload)
    except ProtocolError as refused:
        return check_refusal(refused)
    if isinstance(message, Hello):
        assert message.token == header["token"] and len(message.token) <= protocol.MAX_TOKEN_CHARS
        assert message.client == (header.get("client") or "")
        assert len(message.client) <= protocol.MAX_CLIENT_NAME_CHARS and not payload
    elif isinstance(message, ProtectRequest):
        assert message.id == header["id"] and 1 <= len(message.id) <= protocol.MAX_ID_CHARS
        assert message.payload == payload and payload
        assert len(message.filename) <= protocol.MAX_FILENAME_CHARS
        assert len(message.mime) <= protocol.MAX_MIME_CHARS
        assert message.preset is None or len(message.preset) <= protocol.MAX_PRESET_CHARS
        _check_answers_to(message)
    else:
        assert isinstance(message, Cancel) and message.id == header["id"] and not payload
        assert 1 <= len(message.id) <= protocol.MAX_ID_CHARS
    return f"ok:{type(message).__name__}"


def check_refusal(refused: ProtocolError) -> str:
    """A refusal is a bad_request with a one-line message, naming a valid job id or none, and the
    daemon can send it (the `error` frame encodes and reads back)."""
    assert refused.code is ErrorCode.BAD_REQUEST, refused.code
    _check_person_message(refused.message)
    assert refused.job_id is None or 1 <= len(refused.job_id) <= protocol.MAX_ID_CHARS
    answer = _read_back(protocol.error(refused.job_id, refused.code, refused.message))
    assert answer == {"type": "error", "id": refused.job_id, "code": "bad_request",
                      "message": refused.message}
    return str(refused.code)


def _check_answers_to(request: ProtectRequest) -> None:
    """Every frame the daemon may send about this job encodes and reads back."""
    assert _read_back(protocol.progress(request.id, "queued", 0, 1))["id"] == request.id
    result = _read_back(protocol.result(request.id, request.filename, "image/png", 0, {}, b"x"))
    assert (result["id"], result["filename"]) == (request.id, request.filename)
    assert _read_back(protocol.error(request.id, ErrorCode.BAD_IMAGE, "m"))["id"] == request.id


def _read_back(frame: bytes) -> dict[str, Any]:
    header, _ = protocol.decode_frame(frame, CLIENT_MAX_HEADER_BYTES)
    return header


def _check_person_message(message: Any) -> None:
    assert isinstance(message, str) and message.strip(), repr(message)
    assert "\n" not in message and len(message) <= MAX_MESSAGE_CHARS, repr(message)


def check_round_trip(message: Hello | ProtectRequest | Cancel, max_header_bytes: int) -> str:
    """A valid message, framed as a client does, parses back to itself."""
    header, payload = client_header(message)
    frame = protocol.encode_frame(header, payload)
    assert protocol.parse_client_message(*protocol.decode_frame(frame, max_header_bytes)) == message
    return f"ok:{type(message).__name__}"


# --------------------------------------------------------------------------- images

def check_decode(case: Case, max_pixels: int = FUZZ_MAX_PIXELS) -> str:
    """`decode_image` returns upright RGB pixels within the pixel cap, or raises a BadImageError
    or TooLargeError with a one-line message; never another exception. Cases that know their
    outcome (`Case.expect`) must have it."""
    try:
        decoded = decode_image(case.value, max_pixels=max_pixels)
    except ImageError as refused:
        assert isinstance(refused, (BadImageError, TooLargeError)), type(refused)
        assert refused.code in ("bad_image", "too_large")
        _check_person_message(str(refused))
        assert case.expect != EXPECT_DECODED, f"a seed was refused: {refused}"
        assert case.expect != EXPECT_TOO_LARGE or isinstance(refused, TooLargeError), repr(refused)
        return type(refused).__name__
    assert case.expect not in (EXPECT_IMAGE_ERROR, EXPECT_TOO_LARGE), "decoded, should be refused"
    check_decoded(decoded, max_pixels)
    return "decoded"


def check_decoded(decoded: DecodedImage, max_pixels: int) -> None:
    """Pixels (3, H, W) and alpha (1, H, W) float32 in [0, 1], H * W within the cap."""
    pixels = decoded.pixels
    assert pixels.dtype == torch.float32 and pixels.ndim == 3 and pixels.shape[0] == 3
    height, width = pixels.shape[1:]
    assert height >= 1 and width >= 1 and height * width <= max_pixels
    assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
    if decoded.alpha is not None:
        assert decoded.alpha.shape == (1, height, width)
        assert float(decoded.alpha.min()) >= 0.0 and float(decoded.alpha.max()) <= 1.0
    assert decoded.format in SUPPORTED_FORMATS and decoded.mime == MIME_TYPES[decoded.format]
    assert decoded.orientation in range(1, 9)
