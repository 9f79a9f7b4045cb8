"""Drive LowKey for real: `lowkey-daemon serve` as a child process that can be killed and started
again, Debian's Chromium (Playwright) with the unpacked extension, the extension set up through its
own options page and popup, and the in-page indicator read through DevTools.

Shared by tests/test_extension_e2e.py, tests/test_soak.py and benchmarks/soak.py (which puts
tests/ on sys.path). Failures raise HarnessError (an AssertionError, so pytest reports it as one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing, contextmanager
from pathlib import Path

import playwright.sync_api as playwright_api
from playwright.sync_api import expect

REPO = Path(__file__).resolve().parents[1]
#: The extension under test (another checkout's, to see a test fail on it).
EXTENSION_SOURCE = Path(os.environ.get("LOWKEY_EXTENSION_SOURCE", REPO / "extension"))
CHROMIUM = Path(os.environ.get("LOWKEY_CHROMIUM", "/usr/bin/chromium"))

#: Pinned by the "key" in extension/manifest.json; the daemon allows this origin by default.
EXTENSION_ID = "lahampmkkjgenmpklbngemnflhgehnao"
#: The fake site's host, as the person adds it in the options page (the site listens on 127.0.0.1).
SITE_HOST = "127.0.0.1"
SITE_PATTERN = "*://127.0.0.1/*"
#: Generous bound on any one wait (a daemon start, a protection on a busy CPU), seconds.
WAIT_SECONDS = 240
#: The command that runs the daemon (the `lowkey-daemon` script runs the same module).
DAEMON_COMMAND = (sys.executable, "-m", "lowkey_daemon")


class HarnessError(AssertionError):
    """Something the harness waited for did not happen."""


def wait_until(condition, what: str, timeout: float = WAIT_SECONDS, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise HarnessError(f"gave up waiting: {what}")
        time.sleep(every)


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------------------------- daemon

class DaemonProcess:
    """`lowkey-daemon serve` on one port with its own config dir (LOWKEY_CONFIG_DIR), logging to
    config_dir/daemon.log (appended across restarts). `serve_args`: extra flags for serve."""

    def __init__(self, config_dir: Path, port: int | None = None, serve_args: tuple[str, ...] = ()):
        self.config_dir = Path(config_dir)
        self.port = port or free_port()
        self.serve_args = tuple(serve_args)
        self.log_path = self.config_dir / "daemon.log"
        self.env = {**os.environ, "LOWKEY_CONFIG_DIR": str(self.config_dir)}
        self.process: subprocess.Popen | None = None
        self.token = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, wait: bool = True) -> None:
        """Start serving (wait: until /v1/health answers, HarnessError after WAIT_SECONDS)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([*DAEMON_COMMAND, "serve", "--port", str(self.port), *self.serve_args],
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            wait_until(self.ready, f"the daemon to answer on port {self.port}", every=0.2)

    def ready(self) -> bool:
        """Does it answer /v1/health now? HarnessError when the process has exited."""
        if self.process.poll() is not None:
            raise HarnessError(f"lowkey-daemon serve exited with {self.process.returncode}:\n"
                               + self.log_path.read_text()[-4000:])
        return self.health() is not None

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/health", timeout=2) as answer:
                health = json.load(answer)
        except (OSError, ValueError):
            return None
        return health if health.get("status") == "ok" else None

    def pair(self) -> str:
        """The pairing token (`lowkey-daemon pair`), also kept in self.token."""
        paired = subprocess.run([*DAEMON_COMMAND, "pair", "--port", str(self.port)], env=self.env,
                                capture_output=True, text=True, check=True)
        self.token = paired.stdout.split()[0]
        return self.token

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and wait for the exit (SIGKILL after `timeout` s); the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def connections_logged(self) -> int:
        """WebSocket clients the daemon has accepted so far, all incarnations (it logs each one)."""
        return self.log_path.read_text().count("client connected")


def process_rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise HarnessError(f"no VmRSS for process {pid}")


def process_open_sockets(pid: int) -> int:
    """File descriptors of a process that are sockets (Linux /proc/PID/fd)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:   # closed while we looked
            pass
    return count


# ------------------------------------------------------------------------------------- browser

class Browser:
    """The persistent Chromium context with the unpacked extension, and helpers to drive it."""

    def __init__(self, context):
        self.context = context
        self._probe = None

    def extension_page(self, path: str, width: int = 900, height: int = 760):
        page = self.context.new_page()
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"chrome-extension://{EXTENSION_ID}/{path}")
        return page

    def evaluate(self, expression: str):
        """Evaluate in an extension page kept open for it (extension APIs, the extension's storage)."""
        if self._probe is None or self._probe.is_closed():
            self._probe = self.extension_page("options/options.html")
        return self._probe.evaluate(expression)

    def settings(self) -> dict:
        return self.evaluate("chrome.storage.local.get('settings').then(stored => stored.settings)")

    def registered_matches(self) -> list[str]:
        scripts = self.evaluate("chrome.scripting.getRegisteredContentScripts()")
        return sorted({match for script in scripts for match in script["matches"]})

    def worker_targets(self, page) -> set[str]:
        """DevTools target ids of the extension's service worker(s) running now."""
        session = self.context.new_cdp_session(page)
        try:
            return {target["targetId"] for target in session.send("Target.getTargets")["targetInfos"]
                    if target["type"] == "service_worker" and EXTENSION_ID in target["url"]}
        finally:
            session.detach()

    def stop_service_worker(self, page) -> set[str]:
        """Stop the extension's service worker as Chrome does when it is idle: close its DevTools
        target (Playwright would keep it alive otherwise). Returns the targets closed."""
        stopped = self.worker_targets(page)
        session = self.context.new_cdp_session(page)
        try:
            for target in stopped:
                session.send("Target.closeTarget", {"targetId": target})
        finally:
            session.detach()
        return stopped


def extension_copy(folder: Path) -> Path:
    """A copy of extension/ in `folder` whose manifest also grants the fake site's host: Chrome's
    permission prompt cannot be answered in automation, and a host already granted is not asked
    for (the options page still asks for it, as it does for any site a person adds)."""
    extension = folder / "lowkey"
    shutil.copytree(EXTENSION_SOURCE, extension)
    manifest = json.loads((extension / "manifest.json").read_text())
    manifest["host_permissions"].append(SITE_PATTERN)
    (extension / "manifest.json").write_text(json.dumps(manifest))
    return extension


@contextmanager
def chromium_with_extension(extension: Path, profile: Path, *, headless: bool = True, env: dict | None = None):
    """Debian Chromium with the unpacked `extension`, a fresh `profile`, headless unless asked (a
    headed one needs DISPLAY in `env`, the browser's environment): yields a Browser."""
    if not CHROMIUM.exists():
        raise HarnessError(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set LOWKEY_CHROMIUM)")
    with playwright_api.sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=headless, env=env,
            viewport={"width": 1000, "height": 760},
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  f"--disable-extensions-except={extension}", f"--load-extension={extension}"])
        try:
            yield Browser(context)
        finally:
            context.close()


def set_up_extension(browser: Browser, daemon: DaemonProcess, site_url: str, preset: str) -> None:
    """Set the extension up as a person would: token and port pasted and tested in the options
    page, the fake site added there, `preset` picked in the popup (a daemon's custom preset
    appears there once the popup has talked to the daemon)."""
    options = browser.extension_page("options/options.html")
    options.fill("#token", daemon.token)
    options.fill("#port", str(daemon.port))
    options.click("#test-connection")
    expect(options.locator("#connection-status")).to_contain_text("Connected", timeout=WAIT_SECONDS * 1000)
    options.fill("#new-site", site_url)
    options.click("#add-site-form button[type=submit]")
    expect(options.locator(f'li[data-host="{SITE_HOST}"] input[type=checkbox]')).to_be_checked()
    wait_until(lambda: SITE_PATTERN in browser.registered_matches(), "the fake site's content scripts are registered")
    options.close()

    popup = browser.extension_page("popup/popup.html", width=360, height=600)
    expect(popup.locator("#daemon-status")).to_contain_text("Connected", timeout=WAIT_SECONDS * 1000)
    expect(popup.locator(f'#preset option[value="{preset}"]')).to_have_count(1, timeout=WAIT_SECONDS * 1000)
    popup.select_option("#preset", preset)
    wait_until(lambda: browser.settings()["preset"] == preset, "the preset is saved")
    popup.close()


def drop_files(page, selector: str, *paths: Path | str) -> None:
    """A real drop of files from outside the browser on the middle of the element (DevTools
    Input.dispatchDragEvent)."""
    box = page.locator(selector).first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    drag = {"items": [], "files": [str(path) for path in paths], "dragOperationsMask": 1}
    session = page.context.new_cdp_session(page)
    try:
        for kind in ("dragEnter", "dragOver", "drop"):
            session.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": drag})
    finally:
        session.detach()


def paste_png(page, selector: str, png: bytes) -> None:
    """A real paste (Ctrl+V) into the element of a PNG put on the clipboard (browsers put images
    there as PNG). The page's origin needs the clipboard permissions granted."""
    page.click(selector)
    page.evaluate("""async (bytes) => {
        const blob = new Blob([new Uint8Array(bytes)], { type: 'image/png' });
        await navigator.clipboard.write([new ClipboardItem({ 'image/png': blob })]);
    }""", list(png))
    page.keyboard.press("Control+V")


# ------------------------------------------------------------------------- the in-page indicator

def _indicator(session) -> dict | None:
    root = session.send("DOM.getDocument", {"depth": -1, "pierce": True})["root"]
    found = []

    def walk(node):
        if node.get("localName") == "lowkey-indicator":
            found.append(node)
        for child in (*node.get("children", ()), *node.get("shadowRoots", ()), *(
                [node["contentDocument"]] if "contentDocument" in node else [])):
            walk(child)

    walk(root)
    return found[0] if found else None


def _text(node) -> str:
    if node.get("nodeType") == 3:
        return node.get("nodeValue", "")
    return "".join(_text(child) for child in node.get("children", ()))


def _find(node, predicate):
    if predicate(node):
        return node
    for child in (*node.get("children", ()), *node.get("shadowRoots", ())):
        if (hit := _find(child, predicate)) is not None:
            return hit
    return None


def _attributes(node) -> dict[str, str]:
    values = node.get("attributes", [])
    return dict(zip(values[::2], values[1::2]))


def _has_class(name: str):
    return lambda node: name in _attributes(node).get("class", "").split()


def indicator_state(page, session=None) -> tuple[str, str]:
    """(state, message) of the indicator on the page: state is the panel's data-state (progress,
    done, blocked, ask), ("", "") when there is no indicator. It lives in a closed shadow root:
    read through DevTools (`session`: the page's CDP session to use, else a new one)."""
    own = session is None
    session = session or page.context.new_cdp_session(page)
    try:
        host = _indicator(session)
        if host is None:
            return "", ""
        panel = _find(host, _has_class("panel"))
        message = _find(host, _has_class("message"))
        return (_attributes(panel).get("data-state", "") if panel else "", _text(message) if message else "")
    finally:
        if own:
            session.detach()


def indicator_message(page) -> str:
    """The indicator's message, or ''."""
    return indicator_state(page)[1]


def click_indicator_button(page, action: str) -> None:
    """A real (trusted) click on one of the indicator's buttons."""
    session = page.context.new_cdp_session(page)
    try:
        host = _indicator(session)
        button = host and _find(host, lambda n: _attributes(n).get("data-action") == action)
        if not button:
            raise HarnessError(f"the indicator has no {action!r} button")
        quad = session.send("DOM.getBoxModel", {"nodeId": button["nodeId"]})["model"]["border"]
    finally:
        session.detach()
    page.mouse.click(sum(quad[0::2]) / 4, sum(quad[1::2]) / 4)
