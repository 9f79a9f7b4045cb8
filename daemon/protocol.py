"""Protocol v1 on the wire: framing, client-message validation, daemon-message builders.

Every message is one binary WebSocket frame:

    +----------------------+------------------------+----------------------------+
    | N: 4 bytes, uint32   | N bytes: UTF-8 JSON    | the rest: payload (bytes), |
    | big-endian           | object, the header     | e.g. an image; may be empty|
    +----------------------+------------------------+----------------------------+

`daemon/PROTOCOL.md` is the description for client writers; this module is the one place that
parses and builds frames. Nothing here touches sockets, images or the engine.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Union

#: The protocol version this daemon speaks (sent in `welcome`, path prefix /v1/).
PROTOCOL_VERSION = 1
#: Bytes of the big-endian unsigned header-length prefix.
HEADER_LENGTH_BYTES = 4
_HEADER_LENGTH = struct.Struct(">I")

#: Longest accepted client strings, in characters (not configurable: they bound log and memory
#: use per message and no real client needs more).
MAX_ID_CHARS = 128
MAX_FILENAME_CHARS = 255
MAX_MIME_CHARS = 100
MAX_CLIENT_NAME_CHARS = 200
MAX_TOKEN_CHARS = 200
MAX_PRESET_CHARS = 64


class ErrorCode(enum.StrEnum):
    """The `code` of a daemon `error` message."""

    UNAUTHORIZED = "unauthorized"   # hello missing, malformed, or wrong token (then close 4401)
    BAD_REQUEST = "bad_request"     # malformed frame or header, unknown type, duplicate id...
    BAD_IMAGE = "bad_image"         # the payload is not a photo the engine can read
    TOO_LARGE = "too_large"         # payload bytes or image pixels above the daemon's limits
    BUSY = "busy"                   # queue limits reached, or the daemon is shutting down
    CANCELLED = "cancelled"         # the client cancelled the job
    INTERNAL = "internal"           # a bug or an engine failure; the message says no more


class CloseCode(enum.IntEnum):
    """WebSocket close codes the daemon uses."""

    GOING_AWAY = 1001        # the daemon is shutting down
    MESSAGE_TOO_BIG = 1009   # a frame above the frame limit (sent by aiohttp itself)
    UNAUTHORIZED = 4401      # the first message was not a hello with the right token
    IDLE = 4408              # no message for idle_timeout_seconds and no job in flight


class ProtocolError(Exception):
    """A client message the daemon refuses. `job_id` is set when the header named one."""

    def __init__(self, code: ErrorCode, message: str, job_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.job_id = job_id


# --------------------------------------------------------------------------- framing

def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One frame: length prefix, compact JSON header, payload."""
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
    return b"".join((_HEADER_LENGTH.pack(len(header_bytes)), header_bytes, payload))


def decode_frame(frame: bytes, max_header_bytes: int) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of one client frame; ProtocolError(BAD_REQUEST) when it is malformed.

    max_header_bytes: the longest JSON header accepted, bytes."""
    if len(frame) < HEADER_LENGTH_BYTES:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"frame of {len(frame)} bytes is shorter than the "
                            f"{HEADER_LENGTH_BYTES}-byte header length")
    (length,) = _HEADER_LENGTH.unpack_from(frame)
    if length > max_header_bytes:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"header of {length} bytes is longer than the limit of "
                            f"{max_header_bytes} bytes")
    end = HEADER_LENGTH_BYTES + length
    if end > len(frame):
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"header length {length} runs past the end of the "
                            f"{len(frame)}-byte frame")
    try:
        header = json.loads(frame[HEADER_LENGTH_BYTES:end].decode("utf-8"),
                            parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"header is not UTF-8 JSON: {_one_line(error)}") from None
    except RecursionError:   # e.g. [[[[...]]]]: json nests one C call per level
        raise ProtocolError(ErrorCode.BAD_REQUEST, "header is nested too deeply") from None
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "header is not a JSON object")
    return header, frame[end:]


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _one_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


# --------------------------------------------------------------------------- client messages

@dataclass(frozen=True)
class Hello:
    token: str
    client: str


@dataclass(frozen=True)
class ProtectRequest:
    """A photo to protect. preset None = the daemon's default preset."""

    id: str
    filename: str
    mime: str
    preset: str | None
    payload: bytes


@dataclass(frozen=True)
class Cancel:
    id: str


ClientMessage = Union[Hello, ProtectRequest, Cancel]


def parse_client_message(header: dict[str, Any], payload: bytes) -> ClientMessage:
    """The typed message a decoded frame carries; ProtocolError(BAD_REQUEST) when a field is
    missing or of the wrong type, or the type is unknown."""
    kind = header.get("type")
    job_id = _echoable_id(header.get("id"))
    if kind == "hello":
        _no_payload(payload, kind)
        return Hello(token=_string(header, "token", MAX_TOKEN_CHARS),
                     client=_string(header, "client", MAX_CLIENT_NAME_CHARS, default=""))
    if kind == "protect":
        job_id = _string(header, "id", MAX_ID_CHARS, min_chars=1)
        try:
            if not payload:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "protect carries no image payload")
            return ProtectRequest(id=job_id,
                                  filename=_string(header, "filename", MAX_FILENAME_CHARS, default=""),
                                  mime=_string(header, "mime", MAX_MIME_CHARS, default=""),
                                  preset=_string(header, "preset", MAX_PRESET_CHARS, default=None),
                                  payload=payload)
        except ProtocolError as error:
            error.job_id = job_id
            raise
    if kind == "cancel":
        _no_payload(payload, kind)
        return Cancel(id=_string(header, "id", MAX_ID_CHARS, min_chars=1))
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "header has no string field 'type'", job_id)
    raise ProtocolError(ErrorCode.BAD_REQUEST,
                        f"unknown message type {kind[:MAX_ID_CHARS]!r}; expected hello, protect "
                        "or cancel", job_id)


_MISSING = object()


def _echoable_id(value: Any) -> str | None:
    """`value` when it is a valid job id, which an `error` may name; else None (an error never
    echoes an id the daemon would refuse: empty, too long, or not writable as UTF-8)."""
    if isinstance(value, str) and 1 <= len(value) <= MAX_ID_CHARS and _is_utf8(value):
        return value
    return None


def _is_utf8(value: str) -> bool:
    """False when `value` holds a lone UTF-16 surrogate: JSON can carry one ("\\ud800"), but it
    cannot be written back as UTF-8, so the daemon could not echo it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(header: dict[str, Any], name: str, max_chars: int, *, min_chars: int = 0,
            default: Any = _MISSING) -> Any:
    value = header.get(name, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{header.get('type')} needs a string '{name}'")
        return default
    if not isinstance(value, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' must be a string")
    if not min_chars <= len(value) <= max_chars:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"'{name}' must be {min_chars} to {max_chars} characters long")
    if not _is_utf8(value):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"'{name}' holds a lone UTF-16 surrogate")
    return value


def _no_payload(payload: bytes, kind: str) -> None:
    if payload:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{kind} takes no payload")


# --------------------------------------------------------------------------- daemon messages

def welcome(device: str, presets: list[str], default_preset: str, limits: dict[str, int],
            daemon_version: str, formats: list[dict[str, Any]]) -> bytes:
    """formats: the image formats the daemon protects (`lowkey_engine.images.formats.advertised`)."""
    return encode_frame({"type": "welcome", "version": PROTOCOL_VERSION, "device": device,
                         "presets": presets, "default_preset": default_preset, "limits": limits,
                         "daemon_version": daemon_version, "formats": formats})


def progress(job_id: str, stage: str, done: int, total: int) -> bytes:
    return encode_frame({"type": "progress", "id": job_id, "stage": stage, "done": done,
                         "total": total})


def result(job_id: str, filename: str, mime: str, faces: int, stats: dict[str, Any],
           image: bytes) -> bytes:
    """filename: the name sent, with an extension that names the returned image's format."""
    return encode_frame({"type": "result", "id": job_id, "filename": filename, "mime": mime,
                         "faces": faces, "stats": json_safe(stats)}, image)


def error(job_id: str | None, code: ErrorCode, message: str) -> bytes:
    return encode_frame({"type": "error", "id": job_id, "code": str(code), "message": message})


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None and tuples as lists: JSON that every parser reads."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
