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
import io
import json
import os
import posixpath
import re
import shutil
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import pytest
import torch
from PIL import Image
from playwright.sync_api import expect

from extension_harness import (EXTENSION_ID, EXTENSION_SOURCE, REPO, SITE_HOST, SITE_PATTERN, WAIT_SECONDS,
                               Browser, DaemonProcess, chromium_with_extension, click_indicator_button,
                               drop_files, extension_copy, free_port, indicator_message, set_up_extension, wait_until)
from e2e_uploads import paste_photo
from fake_social_site import FakeSocialSite

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "tests" / "artifacts"
README_SCREENSHOTS = REPO / "docs" / "screenshots"
#: Set to copy this run's screenshots over the README's (kept out of ordinary runs so a test run
#: leaves the checkout clean).
UPDATE_SCREENSHOTS_ENV = "LOWKEY_UPDATE_SCREENSHOTS"
#: Cosine similarity of a face's embeddings, original vs received, above which it has not moved.
MOVED_BELOW = 0.9


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> DaemonProcess:
    """`lowkey-daemon serve` on a free port with its own config dir, paired with `lowkey-daemon pair`."""
    running = DaemonProcess(tmp_path_factory.mktemp("daemon-config"),
                            serve_args=("--preset", "fast", "--torch-threads", "1"))
    try:
        running.start()
        running.pair()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def site():
    with FakeSocialSite() as running:
        yield running


@contextmanager
def launch_browser(tmp_path_factory, *, headless: bool = True, env: dict | None = None):
    """Chromium with a copy of extension/ whose manifest also grants the fake site's host; `env` is
    the browser's environment (a headed one needs DISPLAY)."""
    extension = extension_copy(tmp_path_factory.mktemp("extension"))
    with chromium_with_extension(extension, tmp_path_factory.mktemp("chromium-profile"),
                                 headless=headless, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory, site) -> Browser:
    with launch_browser(tmp_path_factory) as launched:
        yield launched


@pytest.fixture(scope="module")
def extension(browser, daemon, site) -> Browser:
    """The extension set up as a person would, with the fast preset."""
    set_up_extension(browser, daemon, site.url, "fast")
    return browser


def settings(browser: Browser) -> dict:
    return browser.settings()


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

def wait_for_indicator(page, *fragments: str) -> str:
    text = ""

    def shows_all() -> bool:
        nonlocal text
        text = indicator_message(page)
        return all(fragment in text for fragment in fragments)

    wait_until(shows_all, f"the indicator to say {fragments} (it says {text!r})")
    return text


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
    """A text file passes untouched; a still GIF (no face) comes back as PNG, named for it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    still = tmp_path / "wave.gif"
    Image.new("RGB", (8, 8), "red").save(still)
    chosen = [photos[1], notes, photos[2], still]
    page.set_input_files("#fetch-input", [str(path) for path in chosen])

    screenshot_progress(page, site, "fetch", 4, "indicator.png")
    uploads = site.wait_for_uploads("fetch", 4)
    assert [u.filename for u in uploads] == [photos[1].name, "notes.txt", photos[2].name, "wave.png"]
    assert uploads[1].data == notes.read_bytes()
    assert (uploads[3].content_type, uploads[3].data[:8]) == ("image/png", b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(uploads[3].data)).convert("RGB").getcolors() == [(64, (255, 0, 0))]
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
    png = paste_photo(page, site.url, "#paste-zone", photos[5])
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


# -------------------------------------------------------- every image format, decided by its bytes

def converted(photo: Path, fmt: str, **options) -> bytes:
    """`photo` re-saved in `fmt` ("HEIC" through pillow-heif), with an EXIF artist to strip."""
    import pillow_heif

    image = Image.open(photo).convert("RGB")
    exif = Image.Exif()
    exif[0x013B] = "E2E-ARTIST-SECRET"   # Artist
    buffer = io.BytesIO()
    if fmt == "HEIC":
        pillow_heif.from_pillow(image).save(buffer, quality=90, exif=exif.tobytes())
    elif fmt == "BMP":
        image.save(buffer, fmt)
    else:
        image.save(buffer, fmt, exif=exif.tobytes(), **options)
    return buffer.getvalue()


def test_heic_bmp_and_tiff_arrive_protected_in_kind_without_metadata(page, site, photos, face_check):
    from lowkey_engine.images.formats import sniff

    originals = [("IMG_0001.HEIC", "image/heif", converted(photos[11], "HEIC"), "HEIC", "image/heif"),
                 ("scan.bmp", "image/bmp", converted(photos[0], "BMP"), "BMP", "image/bmp"),
                 ("scan.tiff", "image/tiff", converted(photos[1], "TIFF"), "TIFF", "image/tiff")]
    page.set_input_files("#fetch-input", [{"name": name, "mimeType": mime, "buffer": data}
                                          for name, mime, data, _, _ in originals])
    uploads = site.wait_for_uploads("fetch", len(originals), timeout=WAIT_SECONDS)
    for (name, _, original, fmt, mime), upload in zip(originals, uploads):
        assert (upload.filename, upload.content_type, sniff(upload.data).name) == (name, mime, fmt)
        assert b"E2E-ARTIST-SECRET" not in upload.data
        assert_protected(face_check, original, upload.data)
    assert_page_never_saw(page, *(original for _, _, original, _, _ in originals))


def test_a_jpeg_named_dat_with_no_type_arrives_protected_as_jpg(page, site, photos, face_check, tmp_path):
    """Dropped from disk: the browser gives a .dat no type; the bytes say JPEG."""
    disguised = tmp_path / "photo.dat"
    disguised.write_bytes(converted(photos[3], "JPEG", quality=92))
    box = page.locator("#drop-zone").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    drag = {"items": [], "files": [str(disguised)], "dragOperationsMask": 1}
    session = page.context.new_cdp_session(page)
    for kind in ("dragEnter", "dragOver", "drop"):
        session.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": drag})
    session.detach()
    [upload] = site.wait_for_uploads("drop", 1)
    assert (upload.filename, upload.content_type) == ("photo.jpg", "image/jpeg")
    assert b"E2E-ARTIST-SECRET" not in upload.data
    assert_protected(face_check, disguised.read_bytes(), upload.data)
    assert_page_never_saw(page, disguised.read_bytes())


def test_a_png_named_jpg_goes_out_named_and_typed_png(page, site, photos, face_check, tmp_path):
    misnamed = tmp_path / "me.jpg"
    misnamed.write_bytes(converted(photos[4], "PNG"))
    page.set_input_files("#xhr-input", str(misnamed))
    [upload] = site.wait_for_uploads("xhr", 1)
    assert (upload.filename, upload.content_type, upload.data[:4]) == ("me.png", "image/png", b"\x89PNG")
    assert_protected(face_check, misnamed.read_bytes(), upload.data)


def test_an_animated_gif_is_stopped_and_the_page_says_why(page, site, photos, tmp_path):
    animation = tmp_path / "party.gif"
    frames = [Image.open(photos[5]).convert("RGB"), Image.open(photos[6]).convert("RGB")]
    frames[0].save(animation, save_all=True, append_images=frames[1:], duration=200, loop=0)
    page.set_input_files("#xhr-input", str(animation))
    wait_for_indicator(page, "Upload blocked", "animated GIF", "2 frames")
    assert site.uploads() == []
    assert page.locator("#xhr-input").evaluate("input => input.files.length") == 0
    assert_page_never_saw_anything(page)


def test_a_gif_for_an_input_that_takes_only_gifs_is_stopped_before_protection(page, site, tmp_path):
    """A protected GIF comes back as PNG; an input whose accept refuses PNG is told so, not sent it."""
    still = tmp_path / "sticker.gif"
    Image.new("RGB", (8, 8), "blue").save(still)
    page.evaluate("""() => {
        const input = Object.assign(document.createElement("input"), { type: "file", id: "gif-only" });
        input.accept = "image/gif";
        document.body.append(input);
    }""")
    page.set_input_files("#gif-only", str(still))
    wait_for_indicator(page, "Upload blocked", "This site takes only image/gif", "GIF comes back as PNG")
    assert page.locator("#gif-only").evaluate("input => input.files.length") == 0
    assert_page_never_saw_anything(page)


def test_an_svg_is_stopped_naming_it_and_a_pdf_passes_untouched(page, site, tmp_path):
    document = tmp_path / "report.pdf"
    document.write_bytes(b"%PDF-1.7\n% not an image\n")
    page.set_input_files("#xhr-input", str(document))
    [upload] = site.wait_for_uploads("xhr", 1)
    assert upload.data == document.read_bytes() and upload.filename == "report.pdf"
    site.forget_uploads()
    drawing = tmp_path / "logo.svg"
    drawing.write_text("<svg xmlns='http://www.w3.org/2000/svg'><circle r='4'/></svg>")
    page.set_input_files("#xhr-input", str(drawing))
    wait_for_indicator(page, "Upload blocked", "SVG images cannot be protected")
    assert site.uploads() == []


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


def test_after_its_service_worker_stopped_the_extension_starts_it_and_reconnects(extension, daemon, page, site, photos,
                                                                                 face_check):
    """Chrome stops an idle service worker (and with it the daemon connection): the next upload
    starts the worker again, which connects to the daemon again."""
    connections_before = daemon.connections_logged()
    stopped = extension.stop_service_worker(page)
    assert stopped, "the extension's service worker is not running"
    wait_until(lambda: not extension.worker_targets(page) & stopped, "the service worker to stop")
    page.set_input_files("#xhr-input", str(photos[11]))
    [upload] = site.wait_for_uploads("xhr", 1)
    assert_protected(face_check, photos[11].read_bytes(), upload.data)
    assert daemon.connections_logged() > connections_before, "the daemon saw no new connection"


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
