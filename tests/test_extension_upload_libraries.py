"""End to end: LowKey's extension in Chromium, with the real daemon (fast preset), in front of real
upload libraries from npm, pinned in tools/upload-libs (pages in tests/upload_library_site): FilePond
4.32, Dropzone 6.3, Uppy 6 (Dashboard and DragDrop, both with XHRUpload), react-dropzone 19 on React
18, and a TipTap 3 composer (a contenteditable). Each way a library takes a photo (its file picker,
a drop, a paste) must deliver the protected copy to the server: not the original's bytes, faces
moved, same format and pixel size, no EXIF or GPS left. The libraries take LowKey's re-dispatched
(untrusted) drop and paste events like the person's own.

Needs what tests/test_extension_e2e.py needs, and the upload libraries (install/setup.sh runs
`npm ci --prefix tools/upload-libs`).
"""

from __future__ import annotations

import pytest

import test_extension_e2e as e2e
from e2e_uploads import TaggedPhotos, assert_arrived_protected, drop_files, paste_photo
from upload_library_site import LibrarySite

pytestmark = pytest.mark.slow

# test_extension_e2e.py's fixtures, used here by name (`site` is this module's own).
browser, daemon, extension, face_check, fresh_uploads = e2e.browser, e2e.daemon, e2e.extension, e2e.face_check, \
    e2e.fresh_uploads

#: (page in tests/upload_library_site, how the photo comes in, where on the page, upload channel).
CASES = [
    ("filepond", "picker", ".filepond--drop-label label", "filepond"),
    ("filepond", "drop", ".filepond--drop-label", "filepond"),
    ("filepond", "paste", "h1", "filepond"),
    ("dropzone", "picker", "#zone", "dropzone"),
    ("dropzone", "drop", "#zone", "dropzone"),
    ("uppy-dashboard", "picker", ".uppy-Dashboard-browse", "uppy-dashboard"),
    ("uppy-dashboard", "drop", ".uppy-Dashboard-inner", "uppy-dashboard"),
    ("uppy-dashboard", "paste", ".uppy-Dashboard-inner", "uppy-dashboard"),
    ("uppy-drag-drop", "picker", ".uppy-DragDrop-container", "uppy-drag-drop"),
    ("uppy-drag-drop", "drop", ".uppy-DragDrop-container", "uppy-drag-drop"),
    ("react-dropzone", "picker", "#zone", "react-dropzone"),
    ("react-dropzone", "drop", "#zone", "react-dropzone"),
    ("react-dropzone", "paste", "#zone", "react-dropzone"),
    ("tiptap", "paste", ".ProseMirror", "tiptap-paste"),
    ("tiptap", "drop", ".ProseMirror", "tiptap-drop"),
]


@pytest.fixture(scope="module")
def site():
    with LibrarySite() as running:
        yield running


@pytest.fixture(scope="module")
def tagged_photos(faces_dir, tmp_path_factory) -> TaggedPhotos:
    return TaggedPhotos(faces_dir, tmp_path_factory.mktemp("tagged-photos"), offset=1)


@pytest.mark.parametrize(("library", "way", "selector", "channel"), CASES,
                         ids=[f"{library}-{way}" for library, way, _, _ in CASES])
def test_upload_library_sends_the_protected_photo(extension, site, face_check, tagged_photos, library, way,
                                                  selector, channel):
    photo = tagged_photos.next()
    page = extension.context.new_page()
    try:
        page.goto(site.page_url(library))
        page.locator(selector).first.wait_for()
        if way == "picker":
            with page.expect_file_chooser() as chooser:
                page.locator(selector).first.click()
            chooser.value.set_files(str(photo))
            original = photo.read_bytes()
        elif way == "drop":
            drop_files(page, selector, photo)
            original = photo.read_bytes()
        else:
            original = paste_photo(page, site.url, selector, photo)
        [upload] = site.wait_for_uploads(channel, 1)
        if way != "paste":
            assert upload.filename == photo.name and upload.content_type == "image/jpeg"
        assert_arrived_protected(face_check, original, upload.data, e2e.assert_protected)
        assert len(site.uploads()) == 1, "more than one file reached the site"
    finally:
        page.close()
