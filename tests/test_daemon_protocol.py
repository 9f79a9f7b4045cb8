"""Protocol v1 framing and header validation (daemon/protocol.py), against hand-built bytes."""

from __future__ import annotations

import json
import struct

import pytest

from lowkey_daemon import protocol
from lowkey_daemon.protocol import Cancel, ErrorCode, Hello, ProtectRequest, ProtocolError

MAX_HEADER = 1024


def raw_frame(header: object, payload: bytes = b"") -> bytes:
    """A frame built by hand, as a client in another language would."""
    body = json.dumps(header).encode("utf-8")
    return struct.pack(">I", len(body)) + body + payload


def test_frame_round_trip_keeps_header_and_payload_bytes_exactly():
    payload = bytes(range(256)) * 3
    frame = protocol.encode_frame({"type": "result", "id": "ü-1", "faces": 2}, payload)
    (length,) = struct.unpack(">I", frame[:4])
    assert json.loads(frame[4:4 + length].decode("utf-8")) == {"type": "result", "id": "ü-1", "faces": 2}
    assert frame[4 + length:] == payload
    header, rest = protocol.decode_frame(frame, MAX_HEADER)
    assert header["id"] == "ü-1" and rest == payload


def test_hand_built_protect_frame_parses_to_a_request():
    header, payload = protocol.decode_frame(
        raw_frame({"type": "protect", "id": "a1", "filename": "me.jpg", "mime": "image/jpeg",
                   "preset": "fast"}, b"\xff\xd8jpeg"), MAX_HEADER)
    request = protocol.parse_client_message(header, payload)
    assert request == ProtectRequest(id="a1", filename="me.jpg", mime="image/jpeg", preset="fast",
                                     payload=b"\xff\xd8jpeg")


def test_optional_fields_default_and_hello_and_cancel_parse():
    request = protocol.parse_client_message({"type": "protect", "id": "x"}, b"img")
    assert (request.filename, request.mime, request.preset) == ("", "", None)
    assert protocol.parse_client_message({"type": "hello", "token": "t"}, b"") == Hello("t", "")
    assert protocol.parse_client_message({"type": "cancel", "id": "x"}, b"") == Cancel("x")


@pytest.mark.parametrize("frame, fragment", [
    (b"", "shorter than"),
    (b"\x00\x00", "shorter than"),
    (struct.pack(">I", 50) + b"{}", "runs past the end"),
    (struct.pack(">I", MAX_HEADER + 1) + b"{" * (MAX_HEADER + 1), "longer than the limit"),
    (struct.pack(">I", 3) + b"\xff\xfe{", "not UTF-8 JSON"),
    (struct.pack(">I", 5) + b"{nope", "not UTF-8 JSON"),
    (raw_frame([1, 2]), "not a JSON object"),
    (struct.pack(">I", 11) + b'{"a": NaN }', "not UTF-8 JSON"),
])
def test_malformed_frames_are_bad_requests(frame, fragment):
    with pytest.raises(ProtocolError) as raised:
        protocol.decode_frame(frame, MAX_HEADER)
    assert raised.value.code is ErrorCode.BAD_REQUEST and fragment in raised.value.message


@pytest.mark.parametrize("header, payload, job_id", [
    ({}, b"", None),                                                  # no type
    ({"type": 7}, b"", None),
    ({"type": "subscribe", "id": "q"}, b"", "q"),                     # unknown type keeps the id
    ({"type": "hello"}, b"", None),                                   # no token
    ({"type": "hello", "token": 5}, b"", None),
    ({"type": "hello", "token": "t"}, b"extra", None),
    ({"type": "protect", "filename": "a.jpg"}, b"img", None),        # no id
    ({"type": "protect", "id": ""}, b"img", None),
    ({"type": "protect", "id": "x" * (protocol.MAX_ID_CHARS + 1)}, b"img", None),
    ({"type": "protect", "id": "p1"}, b"", "p1"),                     # no image
    ({"type": "protect", "id": "p2", "filename": 3}, b"img", "p2"),
    ({"type": "protect", "id": "p3", "preset": ["fast"]}, b"img", "p3"),
    ({"type": "cancel"}, b"", None),
])
def test_invalid_headers_are_bad_requests_naming_the_id_when_known(header, payload, job_id):
    with pytest.raises(ProtocolError) as raised:
        protocol.parse_client_message(header, payload)
    assert raised.value.code is ErrorCode.BAD_REQUEST
    assert raised.value.job_id == job_id


def test_daemon_messages_are_strict_json_even_with_nan_stats():
    frame = protocol.result("r1", "a.png", "image/png", 1,
                            {"faces": [{"ssim": float("nan"), "box": (1.0, 2.0, 3.0, 4.0)}]}, b"PNG")
    header, payload = protocol.decode_frame(frame, MAX_HEADER)
    assert header["stats"]["faces"][0] == {"ssim": None, "box": [1.0, 2.0, 3.0, 4.0]}
    assert payload == b"PNG"
    error = protocol.decode_frame(protocol.error(None, ErrorCode.BUSY, "full"), MAX_HEADER)[0]
    assert error == {"type": "error", "id": None, "code": "busy", "message": "full"}


def test_every_error_code_is_the_documented_set():
    assert {c.value for c in ErrorCode} == {"unauthorized", "bad_request", "bad_image", "too_large",
                                            "busy", "cancelled", "internal"}


# --------------------------------------------------------------------------- found by fuzzing

def test_deeply_nested_header_is_a_bad_request_not_a_recursion_error():
    body = b"[" * 5000 + b"]" * 5000          # within the default 16 KiB header limit
    with pytest.raises(ProtocolError) as raised:
        protocol.decode_frame(struct.pack(">I", len(body)) + body, 16 * 1024)
    assert raised.value.code is ErrorCode.BAD_REQUEST and "nested too deeply" in raised.value.message


@pytest.mark.parametrize("header, payload", [
    ({"type": "protect", "id": "\ud800"}, b"img"),               # what JSON "\ud800" decodes to
    ({"type": "protect", "id": "ok", "filename": "a\udfff.jpg"}, b"img"),
    ({"type": "cancel", "id": "x\udbff"}, b""),
    ({"type": "hello", "token": "\ud83d"}, b""),
])
def test_lone_surrogates_are_refused_and_the_refusal_can_be_sent(header, payload):
    with pytest.raises(ProtocolError) as raised:
        protocol.parse_client_message(header, payload)
    refused = raised.value
    assert refused.code is ErrorCode.BAD_REQUEST and "surrogate" in refused.message
    answer, _ = protocol.decode_frame(protocol.error(refused.job_id, refused.code, refused.message),
                                      MAX_HEADER)
    assert answer["id"] == (header["id"] if header.get("id") == "ok" else None)


@pytest.mark.parametrize("bad_id", ["", "x" * (protocol.MAX_ID_CHARS + 1), "\udc00"])
def test_an_error_never_echoes_an_id_the_daemon_would_refuse(bad_id):
    with pytest.raises(ProtocolError) as raised:
        protocol.parse_client_message({"type": "subscribe", "id": bad_id}, b"")
    assert raised.value.job_id is None
    protocol.error(raised.value.job_id, raised.value.code, raised.value.message)    # encodes
