"""Pages that upload with real libraries from npm (FilePond, Dropzone, Uppy, react-dropzone, TipTap,
browser-fs-access) and with the File System Access API, for the extension's end-to-end tests.

The libraries are the versions pinned in tools/upload-libs/package-lock.json (install/setup.sh runs
`npm ci` there); pages load their dist builds from /node_modules/. React and TipTap ship only ES
modules with bare imports, so their two pages are bundled with esbuild (pinned there too) when the
site starts. Every page uploads to /upload/<channel> of the fake social site it extends."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from aiohttp import web

from fake_social_site import FakeSocialSite

HERE = Path(__file__).resolve().parent
LIBRARIES = HERE.parents[1] / "tools" / "upload-libs"
NODE_MODULES = LIBRARIES / "node_modules"
SETUP_STEP = "run ./install/setup.sh (it runs `npm ci --prefix tools/upload-libs`)"
#: Entry modules (in this folder) bundled into /build/<same name>.
BUNDLED = ("react-dropzone.entry.js", "tiptap.entry.js")
BUNDLE_TIMEOUT_S = 120


class LibrarySite(FakeSocialSite):
    """The fake social site plus /lib/<page>.html, /node_modules/ and /build/."""

    def __enter__(self) -> "LibrarySite":
        if not (NODE_MODULES / ".package-lock.json").exists():
            raise RuntimeError(f"the upload libraries are not installed in {NODE_MODULES}: {SETUP_STEP}")
        self._build = tempfile.TemporaryDirectory(prefix="lowkey-upload-libs-")
        self._bundle(Path(self._build.name))
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._build.cleanup()

    def page_url(self, name: str, query: str = "") -> str:
        return f"{self.url}lib/{name}.html{'?' + query if query else ''}"

    @staticmethod
    def _bundle(out: Path) -> None:
        esbuild = NODE_MODULES / ".bin" / "esbuild"
        done = subprocess.run([str(esbuild), *(str(HERE / entry) for entry in BUNDLED), "--bundle",
                               "--format=esm", "--define:process.env.NODE_ENV=\"production\"",
                               f"--outdir={out}", "--log-level=warning"],
                              cwd=LIBRARIES, env={**os.environ, "NODE_PATH": str(NODE_MODULES)},   # entries live here
                              capture_output=True, text=True, timeout=BUNDLE_TIMEOUT_S)
        if done.returncode:
            raise RuntimeError(f"esbuild failed:\n{done.stdout}{done.stderr}")

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        app.router.add_static("/lib/", HERE, show_index=False)
        app.router.add_static("/node_modules/", NODE_MODULES, show_index=False)
        app.router.add_static("/build/", self._build.name, show_index=False)
