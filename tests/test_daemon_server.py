"""The daemon end to end over real WebSockets (pytest-aiohttp), with the real engine.

Presets: the happy path runs the real `fast` preset. Tests about routing, limits and lifecycle
run custom presets defined in the daemon's config file, to keep CPU time sane on a CPU-only
machine: `routing` (the fast preset with one attack step: every stage runs, ~0.5 s a photo instead
of ~5 s) and `endless` (a million steps: a job that only ends when the daemon stops it, so a test
that passes proves the job was stopped, not that it happened to finish).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path

import aiohttp
import pytest
import torch
from aiohttp import WSMsgType
from PIL import Image

from lowkey_daemon.auth import ensure_token, write_new_token
from lowkey_daemon.config import CHROMIUM_EXTENSION_ID, load_config
from lowkey_daemon.jobs import JobScheduler, SinglePhotoEngine
from lowkey_daemon.protocol import CloseCode, decode_frame, encode_frame
from lowkey_daemon.server import SCHEDULER, build_app
from lowkey_engine.images import formats
from lowkey_engine.images.decode import decode_image
from lowkey_engine.faces.detect import load_detector
from lowkey_engine.faces.recognizers import DEFAULT_ENSEMBLE, load_recognizer
from lowkey_engine.protect import Protected

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(600)]

EXTENSION_ORIGIN = f"chrome-extension://{CHROMIUM_EXTENSION_ID}"
#: Largest header the test client expects from the daemon, bytes.
CLIENT_MAX_HEADER = 1 << 20
#: Clean-vs-protected cosine similarity a protected face must stay below, per recognizer.
PROTECTED_COSINE_BELOW = 0.9
#: permessage-deflate window bits a browser offers (what aiohttp's client sends when asked).
BROWSER_DEFLATE = 15
#: Mean absolute pixel difference ([0, 1] units) under which a returned photo is "the same photo".
SAME_PHOTO_MEAN_DIFFERENCE = 0.03

CONFIG_TEMPLATE = """
port = 0
device = "cpu"
preset = "fast"
torch_threads = 1
face_budget = 4
token_file = "{token_file}"

[limits]
{limits}

[presets.routing]
base = "fast"
steps = 1

[presets.endless]
base = "fast"
steps = 1000000
"""


# --------------------------------------------------------------------------- fixtures & client

@pytest.fixture(scope="module")
def photos(faces_dir) -> list[Path]:
    found = sorted((faces_dir / "lfw-dev").glob("*/*.jpg"))
    assert len(found) >= 60, "the routing test needs 60 distinct LFW photos"
    return found


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "pairing-token"
    ensure_token(path)
    return path


@pytest.fixture
def make_config(tmp_path, token_file):
    def make(**limits):
        lines = "\n".join(f"{name} = {value!r}" for name, value in limits.items())
        path = tmp_path / "daemon.toml"
        path.write_text(CONFIG_TEMPLATE.format(token_file=token_file, limits=lines), encoding="utf-8")
        return load_config(path, environ={})
    return make


@pytest.fixture
def start_daemon(aiohttp_client, make_config):
    """start_daemon(**limits) -> aiohttp TestClient of a fresh daemon app (real engine)."""
    async def start(scheduler_for=None, **limits):
        config = make_config(**limits)
        app = build_app(config, scheduler_for(config) if scheduler_for else None)
        return await aiohttp_client(app)
    return start


class Wire:
    """A protocol v1 client over one WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.progress: dict[str, list[tuple[str, int]]] = {}
        self._answers: dict[str, tuple[dict, bytes]] = {}

    async def send(self, header: dict, payload: bytes = b"") -> None:
        await self.ws.send_bytes(encode_frame(header, payload))

    async def protect(self, job_id: str, photo: bytes, preset: str | None = None,
                      filename: str = "photo.jpg") -> None:
        header = {"type": "protect", "id": job_id, "filename": filename, "mime": "image/jpeg"}
        if preset:
            header["preset"] = preset
        await self.send(header, photo)

    async def receive(self) -> tuple[dict, bytes] | None:
        """The next daemon message; None once the socket has closed."""
        message = await self.ws.receive()
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        assert message.type is WSMsgType.BINARY, f"daemon sent a {message.type} frame"
        header, payload = decode_frame(message.data, CLIENT_MAX_HEADER)
        if header["type"] == "progress":
            self.progress.setdefault(header["id"], []).append((header["stage"], header["done"]))
        elif header["type"] in ("result", "error") and header.get("id") is not None:
            self._answers[header["id"]] = (header, payload)
        return header, payload

    async def answer(self, job_id: str) -> tuple[dict, bytes]:
        """The result or error for `job_id` (messages for other ids are kept)."""
        while job_id not in self._answers:
            assert await self.receive() is not None, f"socket closed before {job_id} was answered"
        return self._answers.pop(job_id)

    async def next_error(self) -> dict:
        """The next `error` (skipping progress)."""
        while True:
            received = await self.receive()
            assert received is not None, "socket closed before an error came"
            if received[0]["type"] == "error":
                self._answers.pop(received[0].get("id"), None)
                return received[0]

    async def until_stage(self, job_id: str, stage: str) -> None:
        while stage not in [s for s, _ in self.progress.get(job_id, [])]:
            assert await self.receive() is not None


async def connect(client, token: str | None, origin: str | None = EXTENSION_ORIGIN,
                  headers: dict | None = None) -> tuple[Wire, dict]:
    """A socket that has said hello; returns it with the daemon's first answer."""
    # Offer permessage-deflate as browsers do: the daemon must decline it.
    ws = await client.ws_connect("/v1/ws", origin=origin, headers=headers, compress=BROWSER_DEFLATE)
    wire = Wire(ws)
    await wire.send({"type": "hello", "token": token, "client": "pytest"})
    first = await wire.receive()
    return wire, first[0] if first else None


async def paired(client, token_file: Path) -> Wire:
    wire, welcome = await connect(client, token_file.read_text().strip())
    assert welcome["type"] == "welcome"
    return wire


async def wait_until(condition) -> None:
    """Wait for a condition the daemon reaches by itself (the test timeout bounds it)."""
    while not condition():
        await asyncio.sleep(0.02)


def embedding_cosines(original: bytes, protected: bytes) -> dict[str, float]:
    """Per recognizer of the attacked ensemble: cosine of the clean and protected face."""
    clean, changed = decode_image(original).pixels, decode_image(protected).pixels
    faces = load_detector("cpu").detect(clean)
    assert faces, "no face found on the clean photo"
    landmarks = torch.as_tensor(faces[0].landmarks, dtype=torch.float32)[None]
    cosines = {}
    for model_id in DEFAULT_ENSEMBLE:
        recognizer = load_recognizer(model_id, "cpu")
        with torch.no_grad():
            a = recognizer.embed(clean[None], landmarks)
            b = recognizer.embed(changed[None], landmarks)
        cosines[model_id] = float((a * b).sum())
    return cosines


# --------------------------------------------------------------------------- happy path

async def test_happy_path_protects_every_face_for_the_ensemble(start_daemon, token_file, photos, caplog):
    caplog.set_level(logging.DEBUG)
    client = await start_daemon()
    token = token_file.read_text().strip()
    wire, welcome = await connect(client, token)
    assert welcome["type"] == "welcome" and welcome["version"] == 1 and welcome["daemon_version"]
    assert welcome["device"] == "cpu" and welcome["default_preset"] == "fast"
    assert {"fast", "standard", "strong", "routing"} <= set(welcome["presets"])
    assert welcome["limits"]["max_jobs_per_connection"] > 0
    assert wire.ws.compress == 0, "the daemon accepted permessage-deflate; it must be off"

    original = photos[0].read_bytes()
    await wire.protect("job-1", original, preset="fast", filename="holiday.jpg")
    header, protected = await wire.answer("job-1")
    assert header["type"] == "result", header
    assert (header["filename"], header["mime"], header["faces"]) == ("holiday.jpg", "image/jpeg", 1)
    stats = header["stats"]
    assert stats["preset"] == "fast" and stats["cached"] is False and len(stats["faces"]) == 1
    assert (stats["width"], stats["height"]) == (250, 250) and stats["faces"][0]["psnr"] > 30

    stages = wire.progress["job-1"]
    assert stages[0] == ("queued", 0) and stages[-1][0] == "encode"
    attack_steps = [done for stage, done in stages if stage == "attack"]
    assert attack_steps == list(range(1, 16))                    # the fast preset's 15 steps
    assert [s for s, _ in stages].index("decode") < [s for s, _ in stages].index("detect")

    cosines = embedding_cosines(original, protected)
    assert all(c < PROTECTED_COSINE_BELOW for c in cosines.values()), cosines

    # The same photo again comes straight from the cache, byte for byte, with no queueing.
    await wire.protect("job-2", original, preset="fast", filename="again.jpg")
    again, again_bytes = await wire.answer("job-2")
    assert again["stats"]["cached"] is True and again["filename"] == "again.jpg"
    assert again_bytes == protected and "job-2" not in wire.progress

    await wire.ws.close()
    logged = caplog.text
    assert token not in logged and "holiday.jpg" not in logged and "job-1" not in logged
    assert repr(original[:12])[2:-1] not in logged and repr(protected[:12])[2:-1] not in logged


async def test_photo_without_faces_is_a_result_not_an_error(start_daemon, token_file):
    client = await start_daemon()
    wire = await paired(client, token_file)
    blank = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 160, 200)).save(blank, format="PNG")
    await wire.protect("blank", blank.getvalue(), preset="routing", filename="sky.png")
    header, payload = await wire.answer("blank")
    assert header["type"] == "result" and header["faces"] == 0 and header["mime"] == "image/png"
    assert Image.open(io.BytesIO(payload)).size == (64, 48)


async def test_formats_are_advertised_and_results_named_and_typed_for_their_bytes(start_daemon, token_file):
    """The bytes decide: a PNG named .jpg comes back .png typed image/png, a GIF as PNG, a JPEG
    named .dat as .jpg; an animated GIF is refused naming it. welcome lists what is protected."""
    client = await start_daemon()
    wire, welcome = await connect(client, token_file.read_text().strip())
    assert welcome["formats"] == formats.advertised()
    sky = Image.new("RGB", (64, 48), (120, 160, 200))

    def saved(fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        sky.save(buffer, format=fmt, **options)
        return buffer.getvalue()

    cases = [("me.jpg", saved("PNG"), "me.png", "image/png"),
             ("wave.gif", saved("GIF"), "wave.png", "image/png"),
             ("photo.dat", saved("JPEG"), "photo.jpg", "image/jpeg"),
             ("scan.tif", saved("TIFF"), "scan.tif", "image/tiff")]
    for index, (sent, data, named, mime) in enumerate(cases):
        await wire.protect(f"f{index}", data, preset="routing", filename=sent)
        header, payload = await wire.answer(f"f{index}")
        assert (header["type"], header["filename"], header["mime"]) == ("result", named, mime), header
        assert formats.sniff(payload).mime == mime
    animated = saved("GIF", save_all=True, append_images=[Image.new("RGB", (64, 48), (200, 60, 30))])
    await wire.protect("anim", animated, preset="routing", filename="wave.gif")
    header, _ = await wire.answer("anim")
    assert header["type"] == "error" and header["code"] == "bad_image" and "animated GIF" in header["message"]


async def test_health_answers_without_secrets(start_daemon, token_file):
    client = await start_daemon()
    response = await client.get("/v1/health")
    assert response.status == 200
    health = await response.json()
    assert health["status"] == "ok" and health["protocol"] == 1 and health["devices"] == ["cpu"]
    assert token_file.read_text().strip() not in await response.text()
    assert "Access-Control-Allow-Origin" not in response.headers


# --------------------------------------------------------------------------- security

@pytest.mark.parametrize("host", ["evil.example:{port}", "localhost.evil.example:{port}",
                                  "127.0.0.1:{other}", "127.0.0.1", "attacker.test"])
async def test_dns_rebinding_host_is_refused(start_daemon, token_file, host):
    client = await start_daemon()
    forged = host.format(port=client.port, other=client.port + 1)
    response = await client.get("/v1/health", headers={"Host": forged})
    assert response.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/ws", origin=EXTENSION_ORIGIN, headers={"Host": forged})
    assert refused.value.status == 403
    ok = await client.get("/v1/health", headers={"Host": f"localhost:{client.port}"})
    assert ok.status == 200


@pytest.mark.parametrize("origin", [None, "https://social.example", "http://127.0.0.1",
                                    "chrome-extension://pppppppppppppppppppppppppppppppp", "null"])
async def test_origin_not_allow_listed_is_refused(start_daemon, origin):
    client = await start_daemon()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/ws", origin=origin)
    assert refused.value.status == 403


async def test_firefox_extension_origin_is_allowed(start_daemon, token_file):
    client = await start_daemon()
    wire, welcome = await connect(client, token_file.read_text().strip(),
                                  origin="moz-extension://4b8e1f0a-6c55-4f0e-9a51-3d2c7c1e9b10")
    assert welcome["type"] == "welcome"


async def expect_unauthorized(wire: Wire, first: tuple[dict, bytes] | dict | None) -> None:
    header = first[0] if isinstance(first, tuple) else first
    assert header == {"type": "error", "id": None, "code": "unauthorized",
                      "message": header["message"]}
    assert await wire.receive() is None
    assert wire.ws.close_code == CloseCode.UNAUTHORIZED == 4401


async def test_pairing_token_is_required_first(start_daemon, token_file):
    client = await start_daemon()
    token = token_file.read_text().strip()

    wire, first = await connect(client, token[:-1] + ("A" if token[-1] != "A" else "B"))
    await expect_unauthorized(wire, first)
    wire, first = await connect(client, None)                                   # no token
    await expect_unauthorized(wire, first)

    ws = await client.ws_connect("/v1/ws", origin=EXTENSION_ORIGIN)           # protect before hello
    wire = Wire(ws)
    await wire.protect("sneaky", b"\xff\xd8", preset="routing")
    await expect_unauthorized(wire, await wire.receive())

    ws = await client.ws_connect("/v1/ws", origin=EXTENSION_ORIGIN)           # hello as text
    wire = Wire(ws)
    await ws.send_str(f'{{"type": "hello", "token": "{token}"}}')
    await expect_unauthorized(wire, await wire.receive())

    rotated = write_new_token(token_file)                                       # pair --rotate
    wire, first = await connect(client, token)
    await expect_unauthorized(wire, first)
    _, welcome = await connect(client, rotated)
    assert welcome["type"] == "welcome"


async def test_silent_client_is_closed_after_the_hello_timeout(start_daemon):
    client = await start_daemon(hello_timeout_seconds=0.2)
    ws = await client.ws_connect("/v1/ws", origin=EXTENSION_ORIGIN)
    wire = Wire(ws)
    await expect_unauthorized(wire, await wire.receive())


# --------------------------------------------------------------------------- errors

async def test_malformed_frames_get_errors_and_the_connection_keeps_working(start_daemon, token_file, photos):
    client = await start_daemon()
    wire = await paired(client, token_file)
    bad_frames = [
        b"\x00\x01",                                        # shorter than the length prefix
        b"\x00\x00\x10\x00{}",                              # length past the end
        b"\x00\x00\x00\x05{nope",                           # not JSON
        b"\x00\x00\x00\x02[]",                              # not an object
        encode_frame({"id": "no-type"}),
        encode_frame({"type": "launch-missiles", "id": "u1"}),
        encode_frame({"type": "protect", "filename": "x.jpg"}, b"img"),        # no id
        encode_frame({"type": "protect", "id": "empty"}),                    # no payload
        encode_frame({"type": "protect", "id": "p", "preset": "turbo"}, b"img"),
        encode_frame({"type": "hello", "token": "again"}),                   # hello twice
        b"\xff\xff\xff\xff" + b"x" * 16,                    # header length above the limit
    ]
    for frame in bad_frames:
        await wire.ws.send_bytes(frame)
        error = await wire.next_error()
        assert error["code"] == "bad_request", (frame[:40], error)
    assert error["message"]
    await wire.ws.send_str("hello?")
    assert (await wire.next_error())["code"] == "bad_request"

    await wire.protect("garbage", b"this is not a photo at all", preset="routing")
    header, _ = await wire.answer("garbage")
    assert (header["type"], header["code"]) == ("error", "bad_image")
    await wire.protect("cut", photos[1].read_bytes()[:2000], preset="routing")
    header, _ = await wire.answer("cut")
    assert header["code"] == "bad_image"

    await wire.protect("fine", photos[1].read_bytes(), preset="routing")
    header, _ = await wire.answer("fine")
    assert header["type"] == "result" and header["faces"] == 1
    assert (await client.get("/v1/health")).status == 200


async def test_too_large_payload_pixels_and_frame(start_daemon, token_file, photos):
    photo = photos[2].read_bytes()
    client = await start_daemon(max_image_bytes=len(photo) - 1, max_pixels=200 * 200)
    wire = await paired(client, token_file)

    await wire.protect("bytes", photo, preset="routing")
    header, _ = await wire.answer("bytes")
    assert (header["code"], header["id"]) == ("too_large", "bytes")

    small = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(small, format="JPEG", quality=50)    # 250x250, fewer bytes
    assert len(small.getvalue()) < len(photo)
    await wire.protect("pixels", small.getvalue(), preset="routing")
    header, _ = await wire.answer("pixels")
    assert header["code"] == "too_large" and "MP" in header["message"]

    max_frame = 4 + 16 * 1024 + len(photo) - 1
    await wire.ws.send_bytes(b"\x00" * (max_frame + 1))       # above the frame limit: closed
    assert await wire.receive() is None
    assert wire.ws.close_code == CloseCode.MESSAGE_TOO_BIG
    again = await paired(client, token_file)                   # the daemon itself is fine
    await again.protect("after", small.getvalue(), preset="routing")
    assert (await again.answer("after"))[0]["code"] == "too_large"


async def test_busy_when_a_connection_or_the_queue_is_full(start_daemon, token_file, photos):
    client = await start_daemon(max_jobs_per_connection=2, max_queued_jobs=1)
    first = await paired(client, token_file)
    second = await paired(client, token_file)
    third = await paired(client, token_file)

    await first.protect("long", photos[3].read_bytes(), preset="endless")
    await first.until_stage("long", "detect")                  # running: the queue is empty
    await first.protect("waits", photos[4].read_bytes(), preset="routing")       # queued (1 of 1)
    await first.protect("one-too-many", photos[5].read_bytes(), preset="routing")
    header, _ = await first.answer("one-too-many")
    assert (header["code"], header["id"]) == ("busy", "one-too-many")           # 2 per connection

    await second.protect("queue-full", photos[6].read_bytes(), preset="routing")
    header, _ = await second.answer("queue-full")
    assert header["code"] == "busy" and "queue" in header["message"]

    # Cancelling frees the places: the queued job goes first, then the running one.
    await first.send({"type": "cancel", "id": "waits"})
    await first.send({"type": "cancel", "id": "long"})
    assert (await first.answer("waits"))[0]["code"] == "cancelled"
    assert (await first.answer("long"))[0]["code"] == "cancelled"
    await third.protect("now-fine", photos[6].read_bytes(), preset="routing")
    header, _ = await third.answer("now-fine")
    assert header["type"] == "result"                # the endless job was stopped, or this hangs
    scheduler = client.app[SCHEDULER]
    assert scheduler.counters.aborted_running == 1 and scheduler.counters.cancelled == 2
    await first.send({"type": "cancel", "id": "already-gone"})                  # ignored quietly
    await first.protect("still-open", photos[7].read_bytes(), preset="routing")
    assert (await first.answer("still-open"))[0]["type"] == "result"


async def test_engine_failure_is_internal_and_says_nothing_more(start_daemon, token_file, photos, caplog):
    def broken_engine(payload, settings, progress):
        progress("decode", 0, 1)
        raise RuntimeError("CUDA exploded at 0xdeadbeef")

    client = await start_daemon(
        scheduler_for=lambda config: JobScheduler(config, engine=SinglePhotoEngine(broken_engine), warm=False))
    wire = await paired(client, token_file)
    await wire.protect("boom", photos[8].read_bytes(), preset="routing")
    header, _ = await wire.answer("boom")
    assert header["code"] == "internal" and "0xdeadbeef" not in header["message"]
    assert "CUDA exploded" in caplog.text            # the operator's log has the cause
    await wire.protect("boom-again", photos[8].read_bytes(), preset="routing")
    assert (await wire.answer("boom-again"))[0]["code"] == "internal"         # failures not cached


# --------------------------------------------------------------------------- many clients

def signature(photo: bytes) -> torch.Tensor:
    """Decoded pixels, for telling photos apart."""
    return decode_image(photo).pixels


async def test_twenty_clients_three_photos_each_get_their_own_results(start_daemon, token_file, photos):
    clients, per_client = 20, 3
    client = await start_daemon()
    chosen = photos[:clients * per_client]
    originals = {f"c{c}-p{p}": chosen[c * per_client + p] for c in range(clients) for p in range(per_client)}
    sent_pixels = {job_id: signature(path.read_bytes()) for job_id, path in originals.items()}

    async def one_client(index: int) -> dict[str, tuple[dict, bytes]]:
        wire = await paired(client, token_file)
        ids = [f"c{index}-p{p}" for p in range(per_client)]
        for job_id in ids:
            await wire.protect(job_id, originals[job_id].read_bytes(), preset="routing",
                               filename=originals[job_id].name)
        answers = {job_id: await wire.answer(job_id) for job_id in ids}
        await wire.ws.close()
        return answers

    results: dict[str, tuple[dict, bytes]] = {}
    for answers in await asyncio.gather(*(one_client(i) for i in range(clients))):
        results.update(answers)
    assert results.keys() == originals.keys()
    for job_id, (header, payload) in results.items():
        assert header["type"] == "result", header
        assert header["filename"] == originals[job_id].name
        returned = signature(payload)
        differences = {other: float((returned - pixels).abs().mean())
                       for other, pixels in sent_pixels.items()}
        assert min(differences, key=differences.get) == job_id
        assert differences[job_id] < SAME_PHOTO_MEAN_DIFFERENCE
    counters = client.app[SCHEDULER].counters
    assert counters.completed == clients * per_client and counters.failed == 0


async def test_client_leaving_mid_job_does_not_stall_the_others(start_daemon, token_file, photos):
    client = await start_daemon()
    scheduler = client.app[SCHEDULER]
    leaver = await paired(client, token_file)
    stayer = await paired(client, token_file)
    await leaver.protect("abandoned", photos[9].read_bytes(), preset="endless")
    await leaver.protect("abandoned-queued", photos[10].read_bytes(), preset="routing")
    await leaver.until_stage("abandoned", "attack")
    await leaver.ws.close()

    await stayer.protect("mine", photos[11].read_bytes(), preset="routing")
    header, _ = await stayer.answer("mine")
    assert header["type"] == "result"
    await wait_until(lambda: scheduler.counters.aborted_running == 1)
    assert scheduler.counters.dropped == 2 and scheduler.counters.completed == 1


async def test_shutdown_answers_queued_and_running_jobs(aiohttp_server, aiohttp_client, make_config,
                                                         token_file, photos):
    server = await aiohttp_server(build_app(make_config()))
    client = await aiohttp_client(server)
    first = await paired(client, token_file)
    second = await paired(client, token_file)
    await first.protect("running", photos[12].read_bytes(), preset="endless")
    await first.until_stage("running", "detect")
    await first.protect("queued-1", photos[13].read_bytes(), preset="routing")
    await second.protect("queued-2", photos[14].read_bytes(), preset="routing")
    await second.until_stage("queued-2", "queued")

    closing = asyncio.create_task(server.close())
    answers = {}
    for wire, ids in ((first, ("running", "queued-1")), (second, ("queued-2",))):
        for job_id in ids:
            answers[job_id] = (await wire.answer(job_id))[0]
        assert await wire.receive() is None
        assert wire.ws.close_code == CloseCode.GOING_AWAY
    await closing
    assert {job_id: h["code"] for job_id, h in answers.items()} == {
        "running": "busy", "queued-1": "busy", "queued-2": "busy"}
    assert all("shutting down" in h["message"] for h in answers.values())


# --------------------------------------------------------------------------- idle timeout

#: Idle timeout for these tests, seconds: small, but many times an event-loop turn.
IDLE_SECONDS = 0.3


def resting_engine(seconds: float):
    """An engine that works `seconds` without reporting progress (so nothing the daemon sends can
    count as activity), then returns the payload as a 2x2 PNG with no faces."""
    def engine(payload, settings, progress):
        time.sleep(seconds)
        return Protected(payload, "image/png", "PNG", 2, 2, (), seconds, "cpu", settings.preset)
    return lambda config: JobScheduler(config, engine=SinglePhotoEngine(engine), warm=False)


async def closed_after(wire: Wire) -> float:
    """Seconds until the daemon closes the socket (messages before that are read and kept)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while await wire.receive() is not None:
        pass
    return loop.time() - started


async def test_idle_authenticated_socket_is_closed(start_daemon, token_file):
    client = await start_daemon(resting_engine(0), idle_timeout_seconds=IDLE_SECONDS)
    wire, welcome = await connect(client, token_file.read_text().strip())
    assert welcome["limits"]["idle_timeout_seconds"] == IDLE_SECONDS
    assert await closed_after(wire) >= IDLE_SECONDS * 0.9     # loop clocks may round a little
    assert wire.ws.close_code == CloseCode.IDLE == 4408
    assert client.app[SCHEDULER].counters.dropped == 0


async def test_a_running_job_is_not_cut_off_by_the_idle_timeout(start_daemon, token_file):
    job_seconds = 5 * IDLE_SECONDS
    client = await start_daemon(resting_engine(job_seconds), idle_timeout_seconds=IDLE_SECONDS)
    wire = await paired(client, token_file)
    loop = asyncio.get_running_loop()
    sent = loop.time()
    await wire.protect("long", b"photo bytes", preset="routing")
    header, payload = await wire.answer("long")              # the socket stays open meanwhile
    assert header["type"] == "result" and payload == b"photo bytes"
    assert loop.time() - sent >= job_seconds
    assert wire.progress["long"] == [("queued", 0)]           # nothing else was sent meanwhile
    assert await closed_after(wire) >= IDLE_SECONDS * 0.9    # the clock starts at the answer
    assert wire.ws.close_code == CloseCode.IDLE


async def test_client_messages_reset_the_idle_clock(start_daemon, token_file):
    client = await start_daemon(resting_engine(0), idle_timeout_seconds=IDLE_SECONDS)
    wire = await paired(client, token_file)
    for _ in range(10):                      # 10 x a third of the timeout: three timeouts' worth
        await asyncio.sleep(IDLE_SECONDS / 3)
        await wire.send({"type": "cancel", "id": "nothing-in-flight"})     # answered by nothing
    assert not wire.ws.closed
    assert await closed_after(wire) >= IDLE_SECONDS * 0.9
    assert wire.ws.close_code == CloseCode.IDLE
