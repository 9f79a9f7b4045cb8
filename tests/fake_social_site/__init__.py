"""A fake social site for the extension's end-to-end tests: a page with the usual ways sites take
photos (form post, fetch, XHR, drop zone, paste, a file input made in script), served by aiohttp
on 127.0.0.1 from a background thread, recording every file uploaded to it."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Upload:
    channel: str     # form, fetch, xhr, drop, paste, detached
    filename: str
    content_type: str
    data: bytes


class FakeSocialSite:
    """Start with `with FakeSocialSite() as site:`; `site.url` is its address."""

    def __init__(self) -> None:
        self._uploads: list[Upload] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-social-site", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "FakeSocialSite":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 2 ** 20)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def _add_routes(self, app: web.Application) -> None:
        """The page, its script and the upload endpoints (a subclass serves more pages)."""
        app.router.add_get("/", self._page)
        app.router.add_get("/app.js", self._script)
        app.router.add_post("/upload/xhr", self._raw_upload)
        app.router.add_post("/upload/{channel}", self._multipart_upload)

    # ------------------------------------------------------------------ what was uploaded

    def uploads(self, channel: str | None = None) -> list[Upload]:
        with self._changed:
            return [u for u in self._uploads if channel is None or u.channel == channel]

    def wait_for_uploads(self, channel: str, count: int, timeout: float = 180.0) -> list[Upload]:
        """The first `count` uploads on `channel`, once they have all arrived (AssertionError after
        `timeout` seconds without them)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := [u for u in self._uploads if u.channel == channel]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(found)} of {count} uploads arrived on {channel!r}")
                self._changed.wait(left)
            return found

    def forget_uploads(self) -> None:
        with self._changed:
            self._uploads.clear()

    def _record(self, upload: Upload) -> None:
        with self._changed:
            self._uploads.append(upload)
            self._changed.notify_all()

    # ------------------------------------------------------------------ handlers

    async def _page(self, request: web.Request) -> web.Response:
        return web.FileResponse(HERE / "index.html")

    async def _script(self, request: web.Request) -> web.Response:
        return web.FileResponse(HERE / "app.js")

    async def _raw_upload(self, request: web.Request) -> web.Response:
        self._record(Upload("xhr", urllib.parse.unquote(request.headers.get("X-Filename", "")),
                            request.content_type, await request.read()))
        return web.json_response({"received": 1})

    async def _multipart_upload(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        received = 0
        async for part in await request.multipart():
            if part.filename is None:
                continue   # a text field (the form's caption)
            self._record(Upload(channel, part.filename, part.headers.get("Content-Type", ""),
                                await part.read()))
            received += 1
        if channel == "form":
            return web.Response(text=f"<p id='posted'>Posted {received} photos</p>", content_type="text/html")
        return web.json_response({"received": received})
