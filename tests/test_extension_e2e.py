"""End to end: LowKey's browser extension, unpacked in Debian's Chromium (driven by Playwright), on a
fake social site (tests/fake_social_site), with a real `lowkey-daemon serve` on the fast preset.

What the site receives is checked byte for byte and face by face: protected photos differ from the
originals and their faces have moved for every recognizer of the attacked ensemble (measured on the
received bytes); with protection off, or for files LowKey does not protect, the site receives the
original bytes; with the daemon down or unpaired nothing is uploaded and the page says why. The fake
site also spies on every file it can read, to check it never saw an original.

Needs: Debian's Chromium (`apt-get install -y chromium`, or LOWKEY_CHROMIUM=path), Playwright from
PyPI (no `playwright install`), and the converted model weights (`lowkey weights fetch`).
Screenshots of the popup, the options page and the in-page indicator go to tests/artifacts/; with
LOWKEY_UPDATE_SCREENSHOTS=1 they are also copied to docs/screenshots/ for the README.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import posixpath
import re
import urllib.request
import zipfile
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import playwright.sync_api as playwright_api
import pytest
import torch
from PIL import Image
from playwright.sync_api import expect

from e2e_uploads import drop_files, paste_png
from fake_social_site import FakeSocialSite

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: The extension under test (another checkout's, to see a test fail on it).
EXTENSION_SOURCE = Path(os.environ.get("LOWKEY_EXTENSION_SOURCE", REPO / "extension"))
ARTIFACTS = REPO / "tests" / "artifacts"
README_SCREENSHOTS = REPO / "docs" / "screenshots"
#: Set to copy this run's screenshots over the README's (kept out of ordinary runs so a test run
#: leaves the checkout clean).
UPDATE_SCREENSHOTS_ENV = "LOWKEY_UPDATE_SCREENSHOTS"
CHROMIUM = Path(os.environ.get("LOWKEY_CHROMIUM", "/usr/bin/chromium"))

#: Pinned by the "key" in extension/manifest.json; the daemon allows this origin by default.
EXTENSION_ID = "lahampmkkjgenmpklbngemnflhgehnao"
#: The fake site's host, as the person adds it in the options page (the site listens on 127.0.0.1).
SITE_HOST = "127.0.0.1"
SITE_PATTERN = "*://127.0.0.1/*"
#: Generous bound on any one wait (a daemon start, a protection on a busy CPU), seconds.
WAIT_SECONDS = 240
#: Cosine similarity of a face's embeddings, original vs received, above which it has not moved.
MOVED_BELOW = 0.9


# ---------------------------------------------------------------------------------------- daemon

@dataclass
class Daemon:
    port: int
    token: str
    config_dir: Path


def free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> Daemon:
    """`lowkey-daemon serve` on a free port with its own config dir, paired with `lowkey-daemon pair`."""
    config_dir = tmp_path_factory.mktemp("daemon-config")
    env = {**os.environ, "LOWKEY_CONFIG_DIR": str(config_dir)}
    port = free_port()
    command = [sys.executable, "-m", "lowkey_daemon"]
    log_path = config_dir / "daemon.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*command, "serve", "--port", str(port), "--preset", "fast",
                                    "--torch-threads", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"lowkey-daemon serve exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as answer:
                    if json.load(answer)["status"] == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the daemon did not answer in {WAIT_SECONDS} s:\n{log_path.read_text()}")
            time.sleep(0.2)
        paired = subprocess.run([*command, "pair", "--port", str(port)], env=env, capture_output=True,
                                text=True, check=True)
        yield Daemon(port=port, token=paired.stdout.split()[0], config_dir=config_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


# ------------------------------------------------------------------------------ site and browser

@pytest.fixture(scope="module")
def site():
    with FakeSocialSite() as running:
        yield running


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


@contextmanager
def launch_browser(tmp_path_factory, *, headless: bool = True, env: dict | None = None):
    """Chromium with a copy of extension/ whose manifest also grants the fake site's host: Chrome's
    permission prompt cannot be answered in automation, and a host already granted is not asked
    for (the options page still asks for it, as it does for any site a person adds). `env` is the
    browser's environment (a headed one needs DISPLAY)."""
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set LOWKEY_CHROMIUM)")
    extension = tmp_path_factory.mktemp("extension") / "lowkey"
    shutil.copytree(EXTENSION_SOURCE, extension)
    manifest = json.loads((extension / "manifest.json").read_text())
    manifest["host_permissions"].append(SITE_PATTERN)
    (extension / "manifest.json").write_text(json.dumps(manifest))
    profile = tmp_path_factory.mktemp("chromium-profile")
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


@pytest.fixture(scope="module")
def browser(tmp_path_factory, site) -> Browser:
    with launch_browser(tmp_path_factory) as launched:
        yield launched


@pytest.fixture(scope="module")
def extension(browser, daemon, site) -> Browser:
    """The extension set up as a person would: token and port pasted and tested in the options
    page, the fake site added there, the fast preset picked in the popup."""
    options = browser.extension_page("options/options.html")
    options.fill("#token", daemon.token)
    options.fill("#port", str(daemon.port))
    options.click("#test-connection")
    expect(options.locator("#connection-status")).to_contain_text("Connected", timeout=WAIT_SECONDS * 1000)
    options.fill("#new-site", site.url)
    options.click("#add-site-form button[type=submit]")
    expect(options.locator(f'li[data-host="{SITE_HOST}"] input[type=checkbox]')).to_be_checked()
    wait_until(lambda: SITE_PATTERN in browser.registered_matches(), "the fake site's content scripts are registered")
    options.close()

    popup = browser.extension_page("popup/popup.html", width=360, height=600)
    expect(popup.locator("#daemon-status")).to_contain_text("Connected", timeout=WAIT_SECONDS * 1000)
    popup.select_option("#preset", "fast")
    wait_until(lambda: settings(browser)["preset"] == "fast", "the preset is saved")
    popup.close()
    return browser


def settings(browser: Browser) -> dict:
    return browser.evaluate("chrome.storage.local.get('settings').then(stored => stored.settings)")


@pytest.fixture
def page(extension, site):
    """A fresh tab on the fake site (the extension's content scripts run in it)."""
    tab = extension.context.new_page()
    tab.goto(site.url)
    yield tab
    tab.close()


@pytest.fixture(autouse=True)
def fresh_uploads(site):
    site.forget_uploads()


def wait_until(condition, what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting: {what}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------- photos, faces

@pytest.fixture(scope="module")
def photos(faces_dir) -> list[Path]:
    """One LFW photo (250x250, one face) of each of several people: no two tests share a photo, so
    the daemon's cache never answers for the engine."""
    people = sorted(p for p in (faces_dir / "lfw-dev").iterdir() if p.is_dir())
    return [sorted(person.glob("*.jpg"))[0] for person in people[::7][:12]]


@pytest.fixture(scope="module")
def face_check():
    """similarities(original, received) -> {recognizer: cosine of the main face's embeddings}."""
    from lowkey_engine.images.decode import decode_image
    from lowkey_engine.faces.detect import load_detector
    from lowkey_engine.faces.recognizers import DEFAULT_ENSEMBLE, load_recognizer

    detector = load_detector("cpu")
    recognizers = {name: load_recognizer(name) for name in DEFAULT_ENSEMBLE}

    def similarities(original: bytes, received: bytes) -> dict[str, float]:
        before, after = decode_image(original).pixels, decode_image(received).pixels
        assert before.shape == after.shape, "the protected photo changed size"
        faces = detector.detect(before)
        assert faces, "no face in the original photo"
        landmarks = torch.tensor([faces[0].landmarks], dtype=torch.float32)
        with torch.no_grad():
            return {name: float((model.embed(before[None], landmarks) * model.embed(after[None], landmarks)).sum())
                    for name, model in recognizers.items()}

    return similarities


def assert_protected(face_check, original: bytes, received: bytes) -> None:
    assert received != original, "the site received the original bytes"
    similarity = face_check(original, received)
    print("cosine original vs received:", {k: round(v, 3) for k, v in similarity.items()})
    assert all(value < MOVED_BELOW for value in similarity.values()), (
        f"a face did not move for every recognizer: {similarity}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_page_never_saw(page, *originals: bytes) -> None:
    seen = set(page.evaluate("[...window.seenFileHashes]"))
    assert seen, "the fake site's spy saw no file at all"
    assert not seen & {sha256(data) for data in originals}, "the page could read an original photo"


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


def indicator_message(page) -> str:
    """The indicator's message (it is in a closed shadow root: read through DevTools), or ''."""
    session = page.context.new_cdp_session(page)
    try:
        host = _indicator(session)
        message = host and _find(host, lambda n: "message" in _attributes(n).get("class", "").split())
        return _text(message) if message else ""
    finally:
        session.detach()


def wait_for_indicator(page, *fragments: str) -> str:
    text = ""

    def shows_all() -> bool:
        nonlocal text
        text = indicator_message(page)
        return all(fragment in text for fragment in fragments)

    wait_until(shows_all, f"the indicator to say {fragments} (it says {text!r})")
    return text


def click_indicator_button(page, action: str) -> None:
    """A real (trusted) click on one of the indicator's buttons."""
    session = page.context.new_cdp_session(page)
    try:
        host = _indicator(session)
        button = host and _find(host, lambda n: _attributes(n).get("data-action") == action)
        assert button, f"the indicator has no {action!r} button"
        quad = session.send("DOM.getBoxModel", {"nodeId": button["nodeId"]})["model"]["border"]
    finally:
        session.detach()
    page.mouse.click(sum(quad[0::2]) / 4, sum(quad[1::2]) / 4)


def screenshot_progress(page, site, channel: str, count: int, name: str) -> None:
    """Screenshot the indicator while it shows progress (or, had the photos been protected before
    a look, whatever it shows then: this is a picture for the README, not a check)."""
    wait_until(lambda: indicator_message(page).startswith("Protecting") or len(site.uploads(channel)) >= count,
               "the indicator to show progress")
    screenshot_indicator(page, name)


def screenshot_indicator(page, name: str) -> None:
    box = page.locator("lowkey-indicator").bounding_box()
    if box:
        margin = 12
        save_screenshot(page, name, clip={"x": max(box["x"] - margin, 0), "y": max(box["y"] - margin, 0),
                                          "width": box["width"] + 2 * margin, "height": box["height"] + 2 * margin})


def save_screenshot(target, name: str, **options) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(ARTIFACTS / name), **options)


# ---------------------------------------------------------------------------------- the extension

def test_extension_has_its_pinned_id_and_the_default_sites(extension):
    assert [w.url for w in extension.context.service_workers] == [
        f"chrome-extension://{EXTENSION_ID}/background/service-worker.js"]
    options = extension.extension_page("options/options.html")
    try:
        expected = options.evaluate("""async () => {
            const { DEFAULT_SITES, matchPatterns } = await import('/shared/sites.js');
            return DEFAULT_SITES.flatMap(matchPatterns);
        }""")
        hosts = options.locator("#site-list li").evaluate_all("rows => rows.map(row => row.dataset.host)")
    finally:
        options.close()
    manifest = json.loads((EXTENSION_SOURCE / "manifest.json").read_text())
    assert manifest["host_permissions"] == expected, "manifest host_permissions and DEFAULT_SITES differ"
    assert {"facebook.com", "instagram.com", "x.com", "bsky.app", "flickr.com"} <= set(hosts)
    assert set(expected) | {SITE_PATTERN} == set(extension.registered_matches())


def test_frames_match_the_daemon_protocol(extension):
    from lowkey_daemon.protocol import decode_frame, encode_frame

    options = extension.extension_page("options/options.html")
    try:
        ours = options.evaluate("""async () => {
            const { encodeFrame } = await import('/shared/protocol.js');
            return Array.from(encodeFrame({ type: 'protect', id: 'é1', filename: 'ß.jpg' },
                                          new Uint8Array([0, 1, 255])));
        }""")
        header, payload = decode_frame(bytes(ours), max_header_bytes=1024)
        assert header == {"type": "protect", "id": "é1", "filename": "ß.jpg"} and payload == b"\x00\x01\xff"

        theirs = encode_frame({"type": "result", "faces": 2, "filename": "ü.png"}, b"\x89PNG")
        decoded = options.evaluate("""async (frame) => {
            const { decodeFrame } = await import('/shared/protocol.js');
            const { header, payload } = decodeFrame(new Uint8Array(frame));
            return { header, payload: Array.from(payload) };
        }""", list(theirs))
        assert decoded == {"header": {"type": "result", "faces": 2, "filename": "ü.png"}, "payload": list(b"\x89PNG")}
    finally:
        options.close()


def test_store_zip_holds_what_the_browser_loads(tmp_path):
    """extension/build_zip.py: no "key" (the Chrome Web Store refuses one), the rest of the manifest
    as it is, every file a manifest, page or script names inside, nothing else, same bytes twice."""
    sys.path.insert(0, str(EXTENSION_SOURCE))
    try:
        import build_zip
    finally:
        sys.path.remove(str(EXTENSION_SOURCE))
    built = build_zip.build(tmp_path / "a")
    assert build_zip.build(tmp_path / "b").read_bytes() == built.read_bytes()
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        source = json.loads((EXTENSION_SOURCE / "manifest.json").read_text())
        assert "key" not in manifest and manifest == {k: v for k, v in source.items() if k != "key"}
        named = set()
        for name in names - {n for n in names if n.endswith(".png")}:
            folder = PurePosixPath(name).parent
            for path in re.findall(r"""["']([\w./-]+\.(?:js|css|html|png))["']""", archive.read(name).decode()):
                relative = path.startswith(".") or name.endswith(".html")   # else: from the root
                named.add(posixpath.normpath(folder / path) if relative else path.lstrip("/"))
    assert named <= names, f"named but not in the zip: {named - names}"
    assert names <= named | {"manifest.json"}, f"in the zip but used nowhere: {names - named}"
    assert not any(n.endswith(".py") or n.startswith(("tests/", ".")) for n in names)


# ------------------------------------------------------------------------ each way photos arrive

def test_form_post_waits_for_protection(page, site, photos, face_check):
    """The person picks a photo and presses Post at once: the submit is held until the protected
    photo is in the input, then the form posts it (an empty file field would be recorded too)."""
    photo = photos[0]
    page.set_input_files("#form-input", str(photo))
    page.click("#form-submit")
    [upload] = site.wait_for_uploads("form", 1)
    expect(page.locator("#posted")).to_have_text("Posted 1 photos")
    assert upload.filename == photo.name and upload.content_type == "image/jpeg"
    assert_protected(face_check, photo.read_bytes(), upload.data)
    assert len(site.uploads("form")) == 1


def test_fetch_of_several_files_protects_only_the_images(page, site, photos, face_check, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    animation = tmp_path / "wave.gif"
    Image.new("RGB", (8, 8), "red").save(animation)
    chosen = [photos[1], notes, photos[2], animation]
    page.set_input_files("#fetch-input", [str(path) for path in chosen])

    screenshot_progress(page, site, "fetch", 4, "indicator.png")
    uploads = site.wait_for_uploads("fetch", 4)
    assert [u.filename for u in uploads] == [path.name for path in chosen], "order or names changed"
    assert uploads[1].data == notes.read_bytes() and uploads[3].data == animation.read_bytes()
    for path, upload in ((photos[1], uploads[0]), (photos[2], uploads[2])):
        assert_protected(face_check, path.read_bytes(), upload.data)
    assert_page_never_saw(page, photos[1].read_bytes(), photos[2].read_bytes())


def test_xhr_upload_sends_the_protected_photo(page, site, photos, face_check):
    page.set_input_files("#xhr-input", str(photos[3]))
    [upload] = site.wait_for_uploads("xhr", 1)
    assert upload.filename == photos[3].name and upload.content_type == "image/jpeg"
    assert_protected(face_check, photos[3].read_bytes(), upload.data)
    assert_page_never_saw(page, photos[3].read_bytes())


def test_drop_zone_gets_the_protected_photo(page, site, photos, face_check):
    drop_files(page, "#drop-zone", photos[4])
    [upload] = site.wait_for_uploads("drop", 1)
    assert upload.filename == photos[4].name
    assert_protected(face_check, photos[4].read_bytes(), upload.data)
    assert_page_never_saw(page, photos[4].read_bytes())
    assert page.url == site.url, "the browser opened the dropped file"


def test_pasted_photo_is_protected(page, site, photos, face_check):
    """A real paste (Ctrl+V) of an image on the clipboard; browsers put images there as PNG."""
    png = paste_png(page, site.url, "#paste-zone", photos[5])
    [upload] = site.wait_for_uploads("paste", 1)
    assert upload.content_type == "image/png"
    assert_protected(face_check, png, upload.data)


def test_file_input_made_in_script_and_never_attached(page, site, photos, face_check):
    with page.expect_file_chooser() as chooser:
        page.click("#detached-button")
    chooser.value.set_files(str(photos[6]))
    [upload] = site.wait_for_uploads("detached", 1)
    assert upload.filename == photos[6].name
    assert_protected(face_check, photos[6].read_bytes(), upload.data)
    assert_page_never_saw(page, photos[6].read_bytes())


def test_a_photo_lowkey_produced_is_not_protected_again(page, site, photos, tmp_path):
    page.set_input_files("#xhr-input", str(photos[7]))
    [first] = site.wait_for_uploads("xhr", 1)
    again = tmp_path / photos[7].name
    again.write_bytes(first.data)
    site.forget_uploads()
    page.set_input_files("#xhr-input", str(again))
    [second] = site.wait_for_uploads("xhr", 1)
    assert second.data == first.data


# ------------------------------------------------------------------- switched off, and failures

def test_with_the_site_switched_off_the_site_gets_the_original(extension, page, site, photos):
    popup = extension.extension_page("popup/popup.html", width=360, height=600)
    try:
        expect(popup.locator("#site-name")).to_have_text(SITE_HOST)
        popup.uncheck("#site-enabled")
        wait_until(lambda: not next(s for s in settings(extension)["sites"] if s["host"] == SITE_HOST)["enabled"],
                   "the site is switched off")
        page.set_input_files("#xhr-input", str(photos[8]))
        [upload] = site.wait_for_uploads("xhr", 1)
        assert upload.data == photos[8].read_bytes()
    finally:
        popup.check("#site-enabled")
        popup.close()


def daemon_connections(daemon: Daemon) -> int:
    """WebSocket clients the daemon has accepted so far (it logs each one)."""
    return (daemon.config_dir / "daemon.log").read_text().count("client connected")


def test_after_its_service_worker_stopped_the_extension_starts_it_and_reconnects(extension, daemon, page, site, photos,
                                                                                 face_check):
    """Chrome stops an idle service worker (and with it the daemon connection): the next upload
    starts the worker again, which connects to the daemon again."""
    connections_before = daemon_connections(daemon)
    stopped = extension.worker_targets(page)
    assert stopped, "the extension's service worker is not running"
    session = page.context.new_cdp_session(page)
    try:
        for target in stopped:
            session.send("Target.closeTarget", {"targetId": target})
    finally:
        session.detach()
    wait_until(lambda: not extension.worker_targets(page) & stopped, "the service worker to stop")
    page.set_input_files("#xhr-input", str(photos[11]))
    [upload] = site.wait_for_uploads("xhr", 1)
    assert_protected(face_check, photos[11].read_bytes(), upload.data)
    assert daemon_connections(daemon) > connections_before, "the daemon saw no new connection"


def set_options(extension, *, port: int | None = None, token: str | None = None, policy: str | None = None,
                expect_status: str | None = None) -> None:
    """Change the pairing and the failure policy in the options page, as a person would."""
    options = extension.extension_page("options/options.html")
    try:
        if policy:
            options.check(f"input[name=failure-policy][value={policy}]")
            wait_until(lambda: settings(extension)["failurePolicy"] == policy, "the policy is saved")
        if port is not None or token is not None:
            if port is not None:
                options.fill("#port", str(port))
            if token is not None:
                options.fill("#token", token)
            options.click("#test-connection")
            expect(options.locator("#connection-status")).to_contain_text(expect_status, timeout=WAIT_SECONDS * 1000)
    finally:
        options.close()


def test_with_the_daemon_down_nothing_is_uploaded_and_the_page_says_why(extension, daemon, page, site, photos):
    set_options(extension, port=free_port(), expect_status="not running")
    try:
        page.set_input_files("#xhr-input", str(photos[9]))
        message = wait_for_indicator(page, "Upload blocked", "not running")
        assert "lowkey-daemon serve" in message
        screenshot_indicator(page, "indicator-blocked.png")
        assert site.uploads() == []
        assert page.locator("#xhr-input").evaluate("input => input.files.length") == 0
        assert_page_never_saw_anything(page)
    finally:
        set_options(extension, port=daemon.port, expect_status="Connected")


def test_unpaired_nothing_is_uploaded_and_the_page_says_why(extension, daemon, page, site, photos):
    set_options(extension, token="", expect_status="not paired")
    try:
        page.set_input_files("#fetch-input", str(photos[9]))
        wait_for_indicator(page, "Upload blocked", "not paired", "lowkey-daemon pair")
        assert site.uploads() == []
        assert_page_never_saw_anything(page)
    finally:
        set_options(extension, token=daemon.token, expect_status="Connected")


def test_ask_policy_sends_the_original_only_when_the_person_says_so(extension, daemon, page, site, photos):
    set_options(extension, policy="ask", port=free_port(), expect_status="not running")
    try:
        page.set_input_files("#fetch-input", str(photos[10]))
        wait_for_indicator(page, "could not be protected", "Send the original anyway?")
        screenshot_indicator(page, "indicator-ask.png")
        assert site.uploads() == []
        click_indicator_button(page, "send-original")
        [upload] = site.wait_for_uploads("fetch", 1)
        assert upload.data == photos[10].read_bytes()
    finally:
        set_options(extension, policy="block", port=daemon.port, expect_status="Connected")


def assert_page_never_saw_anything(page) -> None:
    assert page.evaluate("window.seenFileHashes.size") == 0


# --------------------------------------------------------------------------- popup and options

def test_popup_shows_the_daemon_and_the_last_results(extension, site):
    """Runs after the uploads above: the popup lists them with faces and seconds. Saves the
    screenshots the README shows."""
    site_tab = extension.context.new_page()
    site_tab.goto(site.url)
    popup = extension.extension_page("popup/popup.html", width=360, height=620)
    options = extension.extension_page("options/options.html", width=900, height=640)
    try:
        expect(popup.locator("#daemon-status")).to_have_text(
            re.compile(r"Connected — daemon \S+, protocol v1, running on \S+"))
        expect(popup.locator("#site-name")).to_have_text(SITE_HOST)
        expect(popup.locator("#site-enabled")).to_be_checked()
        expect(popup.locator("#preset")).to_have_value("fast")
        first = popup.locator("#results li.protected").first
        expect(first).to_contain_text("1 face")
        expect(first).to_contain_text(" s")
        save_screenshot(popup.locator("body"), "popup.png")

        expect(options.locator("#connection-status")).to_contain_text("Connected")
        expect(options.locator("input[name=failure-policy][value=block]")).to_be_checked()
        save_screenshot(options, "options.png", full_page=True)
    finally:
        popup.close()
        options.close()
        site_tab.close()
    if os.environ.get(UPDATE_SCREENSHOTS_ENV):
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("popup.png", "options.png", "indicator.png"):
            shutil.copyfile(ARTIFACTS / name, README_SCREENSHOTS / name)
