"""End to end: files that reach a page through the File System Access API are protected too.
LowKey's extension in headed Chromium under Xvfb (headless Chromium cancels native dialogs, and
Playwright cannot answer showOpenFilePicker's), with the real daemon (fast preset). The person's
choice in the native GTK file dialog is typed with xdotool: Ctrl+L, the path, Alt+O.

Covered: a page calling showOpenFilePicker() itself, browser-fs-access's fileOpen(), react-dropzone
with useFsAccessApi, and a drop zone that reads a drop through getAsFileSystemHandle() (it must
still get a real handle, whose file is the protected copy). With the daemon down the page's
getFile() is refused and nothing is uploaded.

Needs what tests/test_extension_e2e.py needs, the upload libraries (tools/upload-libs), and
Debian's xvfb and xdotool (install/setup.sh installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

import test_extension_e2e as e2e
from e2e_uploads import TaggedPhotos, assert_arrived_protected, drop_files
from test_extension_e2e import free_port, launch_browser, set_options, wait_for_indicator, wait_until
from upload_library_site import LibrarySite

pytestmark = pytest.mark.slow

# test_extension_e2e.py's fixtures, used here by name (`site` and `browser` are this module's own).
daemon, extension, face_check, fresh_uploads = e2e.daemon, e2e.extension, e2e.face_check, e2e.fresh_uploads

X_TOOLS_SETUP = "apt-get install -y xvfb xdotool (install/setup.sh installs them)"
#: Seconds to wait for Xvfb, and for the native file dialog to open.
X_WAIT_S = 30
#: GTK's file chooser: Chromium's dialog titles for showOpenFilePicker (and for a file input).
DIALOG_TITLE = "this site can|^Open File$"


@pytest.fixture(scope="module")
def site():
    with LibrarySite() as running:
        yield running


@pytest.fixture(scope="module")
def display() -> str:
    """A private X display (Xvfb) for headed Chromium and its native file dialogs."""
    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: {X_TOOLS_SETUP}")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x1024x24",
                               "-nolisten", "tcp"], pass_fds=(write_end,),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as announced:   # Xvfb writes its display number when it is ready
            number = announced.readline().strip()
        if not number:
            pytest.fail(f"Xvfb did not start (exit code {server.poll()})")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=X_WAIT_S)


@pytest.fixture(scope="module")
def browser(tmp_path_factory, site, display):
    """Headed Chromium on the Xvfb display; GTK_USE_PORTAL=0 keeps its dialogs GTK's own."""
    env = {**os.environ, "DISPLAY": display, "GTK_USE_PORTAL": "0"}
    with launch_browser(tmp_path_factory, headless=False, env=env) as launched:
        yield launched


@pytest.fixture(scope="module")
def tagged_photos(faces_dir, tmp_path_factory) -> TaggedPhotos:
    return TaggedPhotos(faces_dir, tmp_path_factory.mktemp("tagged-photos"), offset=3)


def choose_in_file_dialog(display: str, path) -> None:
    """Answer the native GTK file dialog as a person would: Ctrl+L, type the path, Alt+O (Open)."""
    env = {**os.environ, "DISPLAY": display}

    def xdotool(*args: str) -> str:
        return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, check=True,
                              timeout=X_WAIT_S).stdout

    def dialogs() -> list[str]:   # `xdotool search` exits 1 when it finds none
        return subprocess.run(["xdotool", "search", "--onlyvisible", "--name", DIALOG_TITLE], env=env,
                              capture_output=True, text=True, timeout=X_WAIT_S).stdout.split()

    deadline = time.monotonic() + X_WAIT_S
    while not (windows := dialogs()):
        if time.monotonic() > deadline:
            pytest.fail(f"no file dialog (a window named {DIALOG_TITLE!r}) opened in {X_WAIT_S} s")
        time.sleep(0.2)
    xdotool("windowfocus", "--sync", windows[-1])
    time.sleep(0.5)   # GTK takes the keyboard once the dialog is mapped and focused
    xdotool("key", "--clearmodifiers", "ctrl+l")
    xdotool("type", "--delay", "20", str(path))
    time.sleep(0.3)
    xdotool("key", "--clearmodifiers", "alt+o")


def pick_through_native_dialog(page, display: str, selector: str, photo) -> None:
    page.click(selector)
    choose_in_file_dialog(display, photo)


PICKER_PAGES = [
    ("fs-access-picker", "", "#pick", "fs-access-picker"),
    ("browser-fs-access", "", "#pick", "browser-fs-access"),
    ("react-dropzone", "fs-access", "#zone", "react-dropzone-fs-access"),
]


@pytest.mark.parametrize(("page_name", "query", "selector", "channel"), PICKER_PAGES,
                         ids=[name for name, *_ in PICKER_PAGES])
def test_photo_picked_with_show_open_file_picker_arrives_protected(extension, site, display, face_check,
                                                                   tagged_photos, page_name, query, selector,
                                                                   channel):
    photo = tagged_photos.next()
    page = extension.context.new_page()
    try:
        page.goto(site.page_url(page_name, query))
        page.locator(selector).wait_for()
        pick_through_native_dialog(page, display, selector, photo)
        [upload] = site.wait_for_uploads(channel, 1)
        wait_for_indicator(page, "1 photo protected")   # shown for a few seconds after protection
        assert upload.filename == photo.name
        assert_arrived_protected(face_check, photo.read_bytes(), upload.data, e2e.assert_protected)
        if page_name == "fs-access-picker":
            assert page.evaluate("window.pickedHandle") == {"isFileHandle": True, "name": photo.name}
    finally:
        page.close()


def test_drop_read_as_file_system_handles_gets_a_real_handle_to_the_protected_copy(extension, site, face_check,
                                                                                   tagged_photos):
    photo = tagged_photos.next()
    page = extension.context.new_page()
    try:
        page.goto(site.page_url("fs-access-drop"))
        drop_files(page, "#drop-zone", photo)
        [upload] = site.wait_for_uploads("fs-access-drop", 1)
        wait_for_indicator(page, "1 photo protected")
        assert page.evaluate("window.droppedHandles") == [{"isFileHandle": True, "kind": "file", "name": photo.name}]
        assert_arrived_protected(face_check, photo.read_bytes(), upload.data, e2e.assert_protected)
    finally:
        page.close()


def test_picked_photo_with_the_daemon_down_is_refused_and_nothing_is_uploaded(extension, daemon, site, display,
                                                                             tagged_photos):
    set_options(extension, port=free_port(), expect_status="not running")
    page = extension.context.new_page()
    try:
        page.goto(site.page_url("fs-access-picker"))
        pick_through_native_dialog(page, display, "#pick", tagged_photos.next())
        wait_for_indicator(page, "Upload blocked", "not running")
        wait_until(lambda: page.locator("#status").text_content().startswith("failed: NotAllowedError"),
                   "the page's getFile() to be refused")
        assert site.uploads() == []
    finally:
        page.close()
        set_options(extension, port=daemon.port, expect_status="Connected")
