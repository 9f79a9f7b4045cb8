"""Helpers shared by the end-to-end tests of real upload libraries and of the File System Access
API: photos that carry metadata (EXIF with a GPS block), the check that an upload arrived
protected, and real drops and pastes driven through DevTools."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from extension_harness import drop_files, paste_png

__all__ = ["drop_files", "paste_photo"]

#: EXIF tags written into the test photos: the camera's make, and the GPS block (its IFD pointer).
EXIF_MAKE = 0x010F
EXIF_GPS_IFD = 0x8825
GPS_POSITION = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}


def write_tagged_photo(source: Path, target: Path) -> Path:
    """`source` (an LFW JPEG) saved as `target`, a JPEG with a camera make and a GPS position."""
    exif = Image.Exif()
    exif[EXIF_MAKE] = "LowKeyTestCamera"
    exif.get_ifd(EXIF_GPS_IFD).update(GPS_POSITION)
    Image.open(source).save(target, "JPEG", quality=92, exif=exif)
    return target


def metadata_of(data: bytes) -> dict:
    """The EXIF tags, and the metadata chunks Pillow reads (exif, xmp, comments, text), of an image."""
    image = Image.open(io.BytesIO(data))
    found = {f"exif:{tag:#x}": value for tag, value in image.getexif().items()}
    found.update({key: value for key, value in image.info.items()
                  if key in ("exif", "xmp", "XML:com.adobe.xmp", "comment", "icc_profile") or key.startswith("tEXt")})
    return found


def assert_arrived_protected(face_check, original: bytes, received: bytes, assert_protected) -> None:
    """The site got a protected copy: not the original's bytes, faces moved (`assert_protected`
    from test_extension_e2e), the same format and pixel size, no metadata left."""
    assert_protected(face_check, original, received)
    before, after = Image.open(io.BytesIO(original)), Image.open(io.BytesIO(received))
    assert (after.format, after.size) == (before.format, before.size), "format or size changed"
    assert not metadata_of(received), f"metadata reached the site: {metadata_of(received)}"


def paste_photo(page, site_url: str, selector: str, photo: Path) -> bytes:
    """A real paste (Ctrl+V) of `photo` into `selector`, put on the clipboard as PNG (as browsers
    put images there); returns the PNG bytes the clipboard held."""
    png = io.BytesIO()
    Image.open(photo).save(png, format="PNG")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site_url.rstrip("/"))
    paste_png(page, selector, png.getvalue())
    return png.getvalue()


class TaggedPhotos:
    """Hands out tagged copies of LFW photos, one person each, never the same twice: the daemon's
    cache never answers for the engine. Modules pass different `offset`s (0-6) so they share none
    (test_extension_e2e.py takes every 7th person from the first)."""

    STRIDE = 7

    def __init__(self, faces_dir: Path, folder: Path, offset: int) -> None:
        people = sorted(p for p in (faces_dir / "lfw-dev").iterdir() if p.is_dir())
        self._sources = iter(sorted(person.glob("*.jpg"))[0] for person in people[offset::self.STRIDE])
        self._folder = folder

    def next(self) -> Path:
        source = next(self._sources)
        return write_tagged_photo(source, self._folder / source.name)
