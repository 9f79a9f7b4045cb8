"""Copies the source files unchanged into a folder (sample photos)."""

from __future__ import annotations

import shutil
from pathlib import Path


def convert(files: dict[str, Path], output: Path) -> None:
    output.mkdir(parents=True)
    for name, path in files.items():
        shutil.copyfile(path, output / name)
