"""What `lowkey eval` keeps on disk between runs: protected photos by photo content and settings
(`ProtectCache`), so a rerun, another recognizer or another upload transform costs no new attack;
and what the recognizers saw in each photo (`ObservationCache`), so clean galleries and probes are
looked at once for all runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .observers import observe_many

#: Bump when the meaning of a cached protected photo changes (engine changes that alter output).
CACHE_VERSION = 1


@dataclass(frozen=True)
class CachedProtection:
    """What the evaluation keeps of a `protect()` result."""

    data: bytes
    format: str
    boxes: tuple[tuple[float, float, float, float], ...]    # faces protected
    seconds: float                                          # of the run that made it
    photo_psnr: float | None
    from_cache: bool = False


ProtectFunction = Callable[..., Any]     # protect(image_bytes, settings, progress) -> Protected


#: ProtectSettings fields that do not change a protected photo's pixels: a photo protected on a
#: GPU serves a CPU rerun, and input limits only refuse photos. Every other field (including ones
#: added later) is part of the cache key.
NOT_IN_CACHE_KEY = frozenset({"device", "max_pixels", "max_bytes"})


def settings_key(settings) -> dict:
    """The settings that decide a protected photo's pixels (all but NOT_IN_CACHE_KEY)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in NOT_IN_CACHE_KEY}


def cache_key(data: bytes, settings) -> str:
    blob = json.dumps({"version": CACHE_VERSION, "photo": hashlib.sha256(data).hexdigest(),
                       "settings": settings_key(settings)}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()


class ProtectCache:
    """Protected photos on disk under `folder`, keyed by the photo's bytes and the settings; a
    miss runs `protect_fn` (default: the engine's `protect`) and stores the result. `folder=None`
    keeps nothing on disk (every call runs the attack)."""

    def __init__(self, folder: str | Path | None, protect_fn: ProtectFunction | None = None):
        self.folder = None if folder is None else Path(folder)
        self._protect_fn = protect_fn
        self.hits = 0
        self.misses = 0

    def _paths(self, key: str) -> tuple[Path, Path]:
        base = self.folder / key[:2] / key
        return base.with_suffix(".bin"), base.with_suffix(".json")

    def get(self, data: bytes, settings, progress=None) -> CachedProtection:
        key = cache_key(data, settings)
        if self.folder is not None:
            blob_path, meta_path = self._paths(key)
            if blob_path.is_file() and meta_path.is_file():
                meta = json.loads(meta_path.read_text())
                self.hits += 1
                return CachedProtection(blob_path.read_bytes(), meta["format"],
                                        tuple(tuple(b) for b in meta["boxes"]), meta["seconds"],
                                        meta["photo_psnr"], from_cache=True)
        self.misses += 1
        protect_fn = self._protect_fn
        if protect_fn is None:
            from ..protect import protect as protect_fn
        result = protect_fn(data, settings, progress)
        boxes = tuple(tuple(float(v) for v in f.box) for f in result.faces)
        entry = CachedProtection(result.data, result.format, boxes,
                                 float(result.seconds), result.photo_psnr)
        if self.folder is not None:
            blob_path, meta_path = self._paths(key)
            blob_path.parent.mkdir(parents=True, exist_ok=True)
            temporary = blob_path.with_suffix(".bin.tmp")
            temporary.write_bytes(entry.data)
            temporary.replace(blob_path)
            meta_path.write_text(json.dumps({"format": entry.format, "boxes": entry.boxes, "seconds": entry.seconds,
                                             "photo_psnr": entry.photo_psnr, "settings": settings_key(settings)},
                                            default=list))
        return entry


# --- what recognizers saw, cached -------------------------------------------------------------

#: Bump when the meaning of a cached observation changes (detector or face-choice changes).
OBSERVATION_CACHE_VERSION = 1


class ObservationCache:
    """What the observers (detector + recognizers) made of each photo, by the photo's sha256:
    recognizer id -> embedding, kept in memory and, with a `folder`, on disk. The disk key holds
    every observer's `signature` (its models' file digests and settings), so a changed model never
    serves a stale embedding; observers without a signature are kept in memory only."""

    def __init__(self, folder: Path | None, observers: Sequence[Any]):
        self._observers = list(observers)
        signatures = [getattr(o, "signature", None) for o in self._observers]
        self.folder = folder if folder is not None and all(signatures) else None
        self._namespace = hashlib.sha256(json.dumps([OBSERVATION_CACHE_VERSION, signatures]).encode()).hexdigest()[:16]
        self._memory: dict[str, dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.folder / self._namespace / key[:2] / f"{key}.pt"

    def __contains__(self, key: str) -> bool:
        if key in self._memory:
            return True
        if self.folder is not None and self._path(key).is_file():
            self._memory[key] = torch.load(self._path(key), weights_only=True)
            self.hits += 1
            return True
        return False

    def __getitem__(self, key: str) -> dict[str, torch.Tensor]:
        return self._memory[key]

    def observe(self, photos: Sequence[tuple[str, bytes]]) -> None:
        """Run every observer on `photos` ((sha256, bytes) pairs, batched) and keep the results."""
        found: dict[str, dict[str, torch.Tensor]] = {key: {} for key, _ in photos}
        for observer in self._observers:
            for (key, _), seen in zip(photos, observe_many(observer, [data for _, data in photos])):
                found[key].update({k: v.detach().cpu().contiguous() for k, v in seen.items()})
        self.misses += len(photos)
        self._memory.update(found)
        if self.folder is None:
            return
        for key, seen in found.items():
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            torch.save(seen, temporary)
            temporary.replace(path)
