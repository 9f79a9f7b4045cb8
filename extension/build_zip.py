#!/usr/bin/env python3
"""Build the extension's zip for store upload (Chrome Web Store, addons.mozilla.org):

    python extension/build_zip.py [--out DIR] [--keep-key]

writes DIR/lowkey-extension-<version>.zip (default DIR: dist/ at the repository root, git-ignored)
and prints its path. The zip holds what the browser loads (manifest, scripts, pages, icons) and
nothing else, with fixed timestamps so the same tree gives the same bytes.

The manifest's "key" (it pins the unpacked extension's ID to the one the daemon allows) is left out
by default: the Chrome Web Store refuses a manifest that has one, and gives the item the ID of
the key it holds. --keep-key keeps it, for a zip loaded unpacked or signed by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

EXTENSION_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = EXTENSION_DIR.parent / "dist"
#: What the browser needs; everything else in extension/ (this script, notes) stays out.
SHIPPED = ("manifest.json", "background", "content", "shared", "popup", "options", "icons")
SHIPPED_SUFFIXES = {".json", ".js", ".html", ".css", ".png", ".svg"}
#: 1980-01-01, the earliest time a zip entry can carry: reproducible archives.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def shipped_files(root: Path = EXTENSION_DIR) -> list[Path]:
    files = []
    for name in SHIPPED:
        path = root / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [p for p in candidates if p.is_file() and p.suffix in SHIPPED_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return files


def build(out_dir: Path = DEFAULT_OUT, keep_key: bool = False, root: Path = EXTENSION_DIR) -> Path:
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    if not keep_key:
        manifest.pop("key", None)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"lowkey-extension-{manifest['version']}.zip"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in shipped_files(root):
            name = path.relative_to(root).as_posix()
            data = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode() \
                if name == "manifest.json" else path.read_bytes()
            entry = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--keep-key", action="store_true", help='keep the manifest\'s "key"')
    args = parser.parse_args(argv)
    print(build(args.out, args.keep_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
