"""The websocket target: a real daemon in a background thread, and the property of one message
sent to it over a real socket.

The daemon is the real app (Host/Origin checks, pairing, framing, validation, scheduler, limits)
with an engine that only decodes (`decode_only_engine`): what is under test is how the socket
layer handles what clients send, not the attack, and loading models would cost seconds a case.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from aiohttp import web
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from lowkey_daemon import protocol
from lowkey_daemon.auth import write_new_token
from lowkey_daemon.config import CHROMIUM_EXTENSION_ID, DaemonConfig, Limits
from lowkey_daemon.jobs import JobScheduler, SinglePhotoEngine
from lowkey_daemon.protocol import CloseCode, ErrorCode
from lowkey_daemon.server import LOOPBACK_ADDRESS, WEBSOCKET_PATH, build_app
from lowkey_engine.images.decode import decode_image
from lowkey_engine.protect import Protected

from .strategies import EXPECT_CLOSED_TOO_BIG, Case
from .targets import CLIENT_MAX_HEADER_BYTES, FUZZ_MAX_PIXELS

ORIGIN = f"chrome-extension://{CHROMIUM_EXTENSION_ID}"
#: The default header limit; a small image limit, so that a frame above the frame limit is cheap
#: to send.
FUZZ_LIMITS = Limits(max_image_bytes=64 * 1024, max_pixels=FUZZ_MAX_PIXELS,
                     hello_timeout_seconds=5.0)
#: Id of the job sent after each case to prove the connection still works.
PING_ID = "fuzz-ping"
PING_PAYLOAD = b"not an image"
#: Longest wait for the daemon's next message or close, seconds (beyond it: a hang).
ANSWER_TIMEOUT_SECONDS = 10.0
START_TIMEOUT_SECONDS = 30.0
DAEMON_MESSAGE_TYPES = frozenset({"welcome", "progress", "result", "error"})


def decode_only_engine(payload: bytes, settings, progress) -> Protected:
    """An engine with `protect`'s signature that decodes (the real decoder, so bad images are
    refused as they would be) and returns the file unchanged."""
    progress("decode", 0, 1)
    decoded = decode_image(payload, max_pixels=settings.max_pixels, max_bytes=settings.max_bytes)
    width, height = decoded.size
    return Protected(payload, decoded.mime, decoded.format, width, height, (), 0.0, "cpu",
                     settings.preset)


class _ErrorCounter(logging.Handler):
    """Counts ERROR records from any logger: a crashed handler is logged by aiohttp or asyncio."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.last = f"{record.name}: {record.getMessage()}"


class FuzzDaemon:
    """The daemon on 127.0.0.1 (a free port) in a thread with its own event loop.

    workdir: where the pairing token is written."""

    def __init__(self, workdir: Path, limits: Limits = FUZZ_LIMITS):
        token_file = workdir / "pairing-token"
        self.token = write_new_token(token_file)
        self.config = DaemonConfig(port=0, device=("cpu",), preset="fast", token_file=token_file,
                                   torch_threads=1, limits=limits)
        self.errors = _ErrorCounter()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-daemon",
                                        daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> "FuzzDaemon":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(START_TIMEOUT_SECONDS)
        logging.getLogger().addHandler(self.errors)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        logging.getLogger().removeHandler(self.errors)
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(
            START_TIMEOUT_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_SECONDS)
        self._loop.close()

    async def _start(self) -> None:
        scheduler = JobScheduler(self.config, engine=SinglePhotoEngine(decode_only_engine), warm=False)
        self._runner = web.AppRunner(build_app(self.config, scheduler), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK_ADDRESS, 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"ws://{LOOPBACK_ADDRESS}:{port}{WEBSOCKET_PATH}"

    def connect(self) -> ClientConnection:
        return connect(self.url, origin=ORIGIN, compression=None, max_size=None,
                       open_timeout=ANSWER_TIMEOUT_SECONDS, close_timeout=ANSWER_TIMEOUT_SECONDS)


def _receive(ws: ClientConnection) -> dict[str, Any] | None:
    """The daemon's next message (checked to be a well-formed daemon message); None once the
    socket has closed."""
    try:
        data = ws.recv(timeout=ANSWER_TIMEOUT_SECONDS)
    except ConnectionClosed:
        return None
    except TimeoutError:
        raise AssertionError(f"the daemon said nothing for {ANSWER_TIMEOUT_SECONDS} s") from None
    assert isinstance(data, bytes), "the daemon sent a text frame"
    header, _ = protocol.decode_frame(data, CLIENT_MAX_HEADER_BYTES)
    assert header.get("type") in DAEMON_MESSAGE_TYPES, header
    if header["type"] == "error":
        assert header["code"] in set(ErrorCode) and header["message"], header
    return header


def _close_code(ws: ClientConnection) -> int | None:
    """Read until the daemon closes the socket; its close code."""
    while _receive(ws) is not None:
        pass
    return ws.close_code


def check_socket(daemon: FuzzDaemon, case: Case) -> str:
    """One message, first on the socket or after the hello. The daemon answers what is not a
    valid hello first with `unauthorized` and closes 4401; after the hello it answers and the
    socket keeps working (a job sent next is answered); a message above the frame limit closes
    the socket with 1009. Nothing is logged as an error (no handler crashed)."""
    message, after_hello = case.value
    errors_before = daemon.errors.count
    with daemon.connect() as ws:
        if after_hello:
            ws.send(protocol.encode_frame({"type": "hello", "token": daemon.token}))
            assert _receive(ws)["type"] == "welcome"
        ws.send(message)
        if case.expect == EXPECT_CLOSED_TOO_BIG:
            assert _close_code(ws) == CloseCode.MESSAGE_TOO_BIG, ws.close_code
            outcome = "closed:1009"
        elif not after_hello:
            first = _receive(ws)
            assert first is not None and (first["code"], first["id"]) == ("unauthorized", None), first
            assert _close_code(ws) == CloseCode.UNAUTHORIZED, ws.close_code
            outcome = "unauthorized"
        else:
            outcome = _answers_then_ping(ws)
    assert daemon.errors.count == errors_before, f"the daemon logged an error: {daemon.errors.last}"
    return outcome


def _answers_then_ping(ws: ClientConnection) -> str:
    """Send a ping job and read until its answer; the outcome names what the case got first."""
    try:
        ws.send(protocol.encode_frame({"type": "protect", "id": PING_ID}, PING_PAYLOAD))
    except ConnectionClosed:
        raise AssertionError(f"the socket closed ({ws.close_code}) after the case") from None
    first = None
    while True:
        header = _receive(ws)
        assert header is not None, f"the socket closed ({ws.close_code}) instead of answering"
        if header.get("id") == PING_ID and header["type"] in ("result", "error"):
            return first or "no answer"
        if header["type"] in ("result", "error") and first is None:
            first = header.get("code", header["type"])
