"""Where converted model files live, and the error raised when one is missing."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

#: Environment variable that overrides where converted model files are read and written.
WEIGHTS_DIR_ENV = "LOWKEY_WEIGHTS_DIR"

_REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


def weights_dir() -> Path:
    """The folder holding converted model files.

    `$LOWKEY_WEIGHTS_DIR` if set; else the checkout's `weights/` folder (an editable install, the
    way install/setup.sh installs); else a per-user data folder for a regular install.
    """
    override = os.environ.get(WEIGHTS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    if (_REPO_WEIGHTS / "manifest.toml").is_file():
        return _REPO_WEIGHTS
    data_home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return data_home / "lowkey" / "weights"


class MissingWeightsError(FileNotFoundError):
    """A model file has not been fetched and converted yet. The message names the command."""

    def __init__(self, model_id: str, path: Path):
        self.model_id = model_id
        self.path = path
        super().__init__(
            f"model file {path} for {model_id!r} is missing: run `lowkey weights fetch {model_id}`")


def converted_path(model_id: str) -> Path:
    """Path of the converted checkpoint for `model_id` (may not exist yet)."""
    return weights_dir() / f"{model_id}.pt"


def require_converted(model_id: str) -> Path:
    """Path of the converted checkpoint for `model_id`; raises MissingWeightsError if absent."""
    path = converted_path(model_id)
    if not path.is_file():
        raise MissingWeightsError(model_id, path)
    return path


@functools.lru_cache(maxsize=64)
def file_digest(path: Path) -> str:
    """sha256 of a file (model files: a few MB), computed once per process: what identifies the
    model a cached result came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
