"""The aiohttp application: `GET /v1/health` and the protocol v1 WebSocket at `/v1/ws`.

Request checks, in order: Host (every route), Origin (WebSocket), then the pairing token in the
first message. One `Connection` per socket reads frames, hands photos to the `JobScheduler`, and
writes everything the daemon says through one writer task (so frames never interleave).
Two timeouts close sockets nobody uses: no hello within `hello_timeout_seconds` (4401), and, once
authenticated, no message within `idle_timeout_seconds` while no job is in flight (4408).
Logs name no token, image byte, file name or job id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from importlib import metadata

from aiohttp import WSMessage, WSMsgType, hdrs, web

from lowkey_engine.images import formats
from lowkey_engine.protect import Protected

from . import protocol
from .auth import host_allowed, origin_allowed, read_token, token_matches
from .config import DaemonConfig
from .jobs import Job, JobScheduler
from .protocol import CloseCode, ErrorCode, Hello, ProtectRequest, ProtocolError

log = logging.getLogger(__name__)

#: The only address the daemon listens on.
LOOPBACK_ADDRESS = "127.0.0.1"
HEALTH_PATH = "/v1/health"
WEBSOCKET_PATH = "/v1/ws"
#: How long a closing connection may take to flush its last messages, seconds.
FLUSH_TIMEOUT_SECONDS = 5.0

CONFIG = web.AppKey("config", DaemonConfig)
SCHEDULER = web.AppKey("scheduler", JobScheduler)
CONNECTIONS = web.AppKey("connections", set)


def daemon_version() -> str:
    try:
        return metadata.version("lowkey")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_app(config: DaemonConfig, scheduler: JobScheduler | None = None) -> web.Application:
    """The daemon's app. scheduler: default one running the real engine (models load at start)."""
    app = web.Application(middlewares=[loopback_host_only])
    app[CONFIG] = config
    app[SCHEDULER] = scheduler or JobScheduler(config)
    app[CONNECTIONS] = set()
    app.router.add_get(HEALTH_PATH, health)
    app.router.add_get(WEBSOCKET_PATH, websocket)
    app.on_startup.append(_start_scheduler)
    app.on_shutdown.append(_shut_down)
    return app


async def _start_scheduler(app: web.Application) -> None:
    await app[SCHEDULER].start()


async def _shut_down(app: web.Application) -> None:
    """Answer every queued and running job, then close every socket with 1001."""
    await app[SCHEDULER].close()
    await asyncio.gather(*(c.close(CloseCode.GOING_AWAY, b"daemon shutting down")
                           for c in list(app[CONNECTIONS])))


@web.middleware
async def loopback_host_only(request: web.Request, handler):
    """Refuse a Host that is not 127.0.0.1 or localhost with the port the request came in on."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    port = sockname[1] if sockname else -1
    if not host_allowed(request.headers.get(hdrs.HOST), port):
        log.warning("refused a request whose Host is not the loopback address and port")
        raise web.HTTPForbidden(text="forbidden: Host must be 127.0.0.1:PORT or localhost:PORT\n")
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    """Liveness and load, no secrets: used by `lowkey-daemon status` and the extension's popup."""
    config, scheduler = request.app[CONFIG], request.app[SCHEDULER]
    return web.json_response({
        "status": "ok", "protocol": protocol.PROTOCOL_VERSION, "version": daemon_version(),
        "devices": scheduler.devices, "presets": list(config.presets),
        "default_preset": config.preset, "queued": scheduler.queued,
        "running": scheduler.running, "face_budget": scheduler.face_budgets,
        "connections": len(request.app[CONNECTIONS])})


async def websocket(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    if not origin_allowed(request.headers.get(hdrs.ORIGIN), config.allowed_origins):
        log.warning("refused a WebSocket from an Origin that is not allow-listed")
        raise web.HTTPForbidden(text="forbidden: Origin is not an allowed extension\n")
    socket = web.WebSocketResponse(compress=False, max_msg_size=config.limits.max_frame_bytes)
    await socket.prepare(request)
    connection = Connection(socket, config, request.app[SCHEDULER])
    request.app[CONNECTIONS].add(connection)
    try:
        await connection.serve()
    finally:
        request.app[CONNECTIONS].discard(connection)
    return socket


class Connection:
    """One authenticated client socket; the `JobOwner` of the jobs it submits."""

    def __init__(self, socket: web.WebSocketResponse, config: DaemonConfig, scheduler: JobScheduler):
        self._socket = socket
        self._config = config
        self._scheduler = scheduler
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        #: Event-loop time of the last activity: a message received, or a job answered.
        self._active_at = 0.0

    async def serve(self) -> None:
        self._writer = asyncio.create_task(self._write_all())
        log.info("client connected")
        try:
            if not await self._authenticate():
                return
            self.send(protocol.welcome(self._scheduler.devices[0], list(self._config.presets),
                                       self._config.preset, self._config.limits.for_clients(),
                                       daemon_version(), formats.advertised()))
            self._mark_active()
            while (message := await self._receive_until_idle()) is not None:
                self._mark_active()
                if message.type is WSMsgType.BINARY:
                    self._handle(message.data)
                elif message.type is WSMsgType.TEXT:
                    self.send(protocol.error(None, ErrorCode.BAD_REQUEST,
                                             "text frames are not part of the protocol: send binary"))
                elif message.type is WSMsgType.ERROR:   # e.g. a frame above max_frame_bytes
                    log.warning("connection error: %s", message.data)   # (aiohttp closed: 1009)
                    break
                else:   # CLOSE, CLOSING, CLOSED: the client or the daemon's shutdown closed it
                    break
            else:
                idle = self._config.limits.idle_timeout_seconds
                log.info("closing a connection idle for %g s", idle)
                await self.close(CloseCode.IDLE, f"idle for {idle:g} s".encode())
        finally:
            self._scheduler.forget_owner(self)
            await self.close(CloseCode.GOING_AWAY, b"")
            log.info("client disconnected")

    async def close(self, code: int, reason: bytes) -> None:
        """Flush what is queued for the client, then close the socket (idempotent)."""
        if self._writer is not None and not self._writer.done():
            self._outbox.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), FLUSH_TIMEOUT_SECONDS)
            except asyncio.TimeoutError:
                self._writer.cancel()
        if not self._socket.closed:
            await self._socket.close(code=code, message=reason)

    def send(self, frame: bytes) -> None:
        self._outbox.put_nowait(frame)

    def _mark_active(self) -> None:
        self._active_at = asyncio.get_running_loop().time()

    async def _receive_until_idle(self) -> WSMessage | None:
        """The client's next message; None once the connection has been idle for
        `idle_timeout_seconds`: no message since the last activity and no job queued or running.
        While a job is in flight the clock does not run (a long job is never cut off)."""
        idle = self._config.limits.idle_timeout_seconds
        loop = asyncio.get_running_loop()
        while True:
            busy = self._scheduler.jobs_in_flight(self) > 0
            wait = idle if busy else self._active_at + idle - loop.time()
            if wait <= 0:
                return None
            try:
                return await self._socket.receive(timeout=wait)
            except asyncio.TimeoutError:
                continue   # look again: a job may have ended, resetting the clock

    async def _write_all(self) -> None:
        while (frame := await self._outbox.get()) is not None:
            try:
                await self._socket.send_bytes(frame)
            except ConnectionError:
                return   # the client has gone; serve() notices and cleans up

    async def _authenticate(self) -> bool:
        """The first message must be a hello with the pairing token, within the hello timeout;
        anything else is answered `unauthorized` and the socket closes with 4401."""
        reason = "the first message must be a hello with the pairing token"
        try:
            message = await self._socket.receive(timeout=self._config.limits.hello_timeout_seconds)
        except asyncio.TimeoutError:
            message, reason = None, "no hello in time"
        if message is not None and message.type is WSMsgType.BINARY:
            try:
                header, payload = protocol.decode_frame(message.data, self._config.limits.max_header_bytes)
                hello = protocol.parse_client_message(header, payload)
            except ProtocolError:
                hello = None
            if isinstance(hello, Hello):
                if token_matches(hello.token, read_token(self._config.token_file)):
                    return True
                reason = "wrong pairing token: pair again (lowkey-daemon pair)"
        elif message is not None and message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED,
                                                       WSMsgType.CLOSING, WSMsgType.ERROR):
            return False
        log.warning("refused a client: %s", reason)
        self.send(protocol.error(None, ErrorCode.UNAUTHORIZED, reason))
        await self.close(CloseCode.UNAUTHORIZED, b"unauthorized")
        return False

    def _handle(self, frame: bytes) -> None:
        try:
            header, payload = protocol.decode_frame(frame, self._config.limits.max_header_bytes)
            message = protocol.parse_client_message(header, payload)
            if isinstance(message, ProtectRequest):
                self._scheduler.submit(self, message.id, message.filename, message.payload,
                                       message.preset or self._config.preset)
            elif isinstance(message, Hello):
                raise ProtocolError(ErrorCode.BAD_REQUEST, "already authenticated")
            else:
                self._scheduler.cancel(self, message.id)
        except ProtocolError as refused:
            self.send(protocol.error(refused.job_id, refused.code, refused.message))

    # ------------------------------------------------------------------ JobOwner

    def job_progress(self, job: Job, stage: str, done: int, total: int) -> None:
        self.send(protocol.progress(job.id, stage, done, total))

    def job_done(self, job: Job, outcome: Protected, cached: bool) -> None:
        self._mark_active()
        stats = {"seconds": outcome.seconds, "device": outcome.device, "preset": outcome.preset,
                 "format": outcome.format, "width": outcome.width, "height": outcome.height,
                 "photo_psnr": outcome.photo_psnr, "cached": cached,
                 "faces": [dataclasses.asdict(f) for f in outcome.faces],
                 **outcome.stats}
        self.send(protocol.result(job.id, formats.filename_for(job.filename, outcome.format),
                                  outcome.mime, outcome.face_count, stats, outcome.data))

    def job_failed(self, job: Job, code: ErrorCode, message: str) -> None:
        self._mark_active()
        self.send(protocol.error(job.id, code, message))


async def run(config: DaemonConfig, stop: asyncio.Event | None = None,
              app: web.Application | None = None) -> None:
    """Serve on 127.0.0.1:config.port until `stop` is set or SIGINT/SIGTERM arrives, then shut
    down (queued jobs are answered `busy`). Logs the port actually bound (config.port 0 = any)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_name in ("SIGINT", "SIGTERM"):
        try:
            loop.add_signal_handler(getattr(signal, signal_name), stop.set)
        except (NotImplementedError, AttributeError):   # Windows: Ctrl+C raises KeyboardInterrupt
            pass
    runner = web.AppRunner(app or build_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOOPBACK_ADDRESS, config.port)
        await site.start()
        port = runner.addresses[0][1]
        log.info("listening on ws://%s:%d%s", LOOPBACK_ADDRESS, port, WEBSOCKET_PATH)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
