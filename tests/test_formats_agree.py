"""The extension and the engine agree on one list of image formats: extension/shared/formats.js and
lowkey_engine/images/formats.py hold the same names, MIME types, extensions, magic numbers, brands
and handling, and their sniffers name the same files the same way (real photos converted to every
format, and the edge cases both must get right). The daemon's `welcome.formats` is the engine's.

Runs formats.js in Node (setup requires Node.js for npm).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image

from lowkey_engine.images import formats

REPO = Path(__file__).resolve().parents[1]
FORMATS_JS = REPO / "extension" / "shared" / "formats.js"
TIMEOUT_S = 60

#: Loads formats.js as the browser does (a classic script) and answers on stdout: the table, and
#: the name each of the hex-encoded files on stdin sniffs as.
NODE_SCRIPT = """
const fs = require("node:fs"), vm = require("node:vm");
vm.runInThisContext(fs.readFileSync(process.argv[1], "utf8"), { filename: process.argv[1] });
const formats = globalThis.LowKeyFormats;
const files = JSON.parse(fs.readFileSync(0, "utf8"));
const sniffed = files.map((hex) => formats.sniff(Uint8Array.from(Buffer.from(hex, "hex")))?.name ?? null);
const names = files.length ? [] : [["me.jpg", "PNG"], ["me.JPEG", "JPEG"], ["wave.gif", "PNG"], ["photo.dat", "JPEG"],
  ["photo", "HEIC"], ["IMG_1.HEIF", "HEIC"], [".hidden", "PNG"], ["", "PNG"], ["scan.tif", "TIFF"]]
  .map(([name, format]) => [name, format, formats.filenameFor(name, format)]);
process.stdout.write(JSON.stringify({ table: formats.FORMATS, generic: formats.GENERIC_HEIF_BRANDS,
  sniffBytes: formats.SNIFF_BYTES, sniffed, names }));
"""


def run_formats_js(files: list[bytes]) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: run ./install/setup.sh (LowKey's setup needs Node.js and npm)")
    done = subprocess.run([node, "-e", NODE_SCRIPT, str(FORMATS_JS)], input=json.dumps([f.hex() for f in files]),
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def python_table() -> list[dict]:
    return [{"name": f.name, "mimes": list(f.mimes), "extensions": list(f.extensions), "handling": str(f.handling),
             "signatures": [[[offset, magic.hex()] for offset, magic in signature] for signature in f.signatures],
             "brands": [brand.decode("ascii") for brand in f.brands], "output": f.output}
            for f in formats.FORMATS]


def test_the_tables_are_the_same():
    answer = run_formats_js([])
    assert answer["table"] == python_table()
    assert answer["generic"] == [brand.decode("ascii") for brand in formats.GENERIC_HEIF_BRANDS]
    assert answer["sniffBytes"] == formats.SNIFF_BYTES


def test_output_names_are_made_the_same_way():
    for name, format_name, named in run_formats_js([])["names"]:
        assert formats.filename_for(name, format_name) == named, name


def test_the_daemon_advertises_what_the_extension_protects():
    extension_protects = [f["name"] for f in run_formats_js([])["table"] if f["handling"] != "stopped"]
    assert [f["name"] for f in formats.advertised()] == extension_protects


def converted(photo: Path) -> list[bytes]:
    """The photo in every format Pillow/pillow-heif write, plus animated and multi-page files."""
    with Image.open(photo) as image:
        image = image.convert("RGB")
    files = []
    for fmt, options in (("JPEG", {}), ("PNG", {}), ("WEBP", {}), ("AVIF", {}), ("BMP", {}), ("TIFF", {}),
                         ("GIF", {}), ("ICO", {}), ("PSD", None), ("JPEG2000", {})):
        if options is None:
            continue   # Pillow reads PSD but does not write it: its magic is in the edge cases
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        files.append(buffer.getvalue())
    heic = io.BytesIO()
    pillow_heif.from_pillow(image).save(heic, quality=50)
    files.append(heic.getvalue())
    for fmt in ("GIF", "PNG", "WEBP", "TIFF"):
        buffer = io.BytesIO()
        image.save(buffer, fmt, save_all=True, append_images=[image.rotate(90)])
        files.append(buffer.getvalue())
    return files


EDGE_CASES = [
    b"", b"\xff", b"BM", b"BMW is a car" + bytes(30), b"8BPS\x00\x01" + bytes(30), b"%PDF-1.7\n", b"hello\n",
    b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1miaf",
    b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", b"\x00\x00\x00\x10ftypheic\x00\x00\x00\x00",
    b"\x00\x00\x00\x0cJXL \r\n\x87\n", b"\xff\x0a\xff", b"\x00\x00\x01\x00\x01\x00",
    b"\xef\xbb\xbf\n <svg xmlns='http://www.w3.org/2000/svg'/>", b"<?xml version='1.0'?><svg/>",
    b"<!doctype html><svg></svg>", b"<svg", b"<?xml version='1.0'?><note/>",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00AVI LIST", b"GIF87a", b"GIF89b",
    b"BM" + bytes(12) + b"\x28\x00\x00\x00", b"BM" + bytes(12) + b"\x29\x00\x00\x00",
]


def test_both_sniffers_name_every_file_the_same(faces_dir):
    files = converted(faces_dir / "photos-group" / "obama.jpg") + EDGE_CASES
    expected = [(f.name if (f := formats.sniff(data)) else None) for data in files]
    assert run_formats_js(files)["sniffed"] == expected
    assert {"JPEG", "PNG", "WEBP", "HEIC", "AVIF", "BMP", "TIFF", "GIF", "ICO", "PSD", "SVG", "JPEG XL",
            "JPEG 2000", None} <= set(expected)
