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


def cache_key(data: bytes, settings, face_budget: int = 1) -> str:
    """What a protected photo is stored under: its bytes, the settings, and, when the photo was
    attacked in batches of more than one face (`face_budget`), that budget: a batch's other photos
    change its float arithmetic (batching.py), so the two paths never serve each other's photos."""
    key = {"version": CACHE_VERSION, "photo": hashlib.sha256(data).hexdigest(), "settings": settings_key(settings)}
    if face_budget > 1:
        key["face_budget"] = face_budget
    blob = json.dumps(key, sort_keys=True, default=list)
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
        """The photo protected with `settings`: from disk, or protected now (and stored)."""
        return self.get_many([data], settings, lambda index: progress)[0]

    def get_many(self, photos: Sequence[bytes], settings, progress=None, face_budget: int = 1
                 ) -> list[CachedProtection]:
        """Every photo protected with `settings`, in order: from disk, or protected now (and
        stored). face_budget > 1: the photos not on disk are attacked together, that many faces a
        batch (batching.protect_many; needs the engine's own protect). `progress(index)` gives
        photo `index`'s progress callback. A photo that cannot be protected raises."""
        keys = [cache_key(data, settings, face_budget) for data in photos]
        found: dict[int, CachedProtection] = {}
        for index, key in enumerate(keys):
            if (entry := self._load(key)) is not None:
                found[index] = entry
        self.hits += len(found)
        missing = [i for i in range(len(photos)) if i not in found]
        self.misses += len(missing)
        for index, result in self._protect([photos[i] for i in missing], settings,
                                           lambda k: progress(missing[k]) if progress else None, face_budget):
            if isinstance(result, BaseException):
                raise result
            boxes = tuple(tuple(float(v) for v in f.box) for f in result.faces)
            found[missing[index]] = entry = CachedProtection(result.data, result.format, boxes,
                                                             float(result.seconds), result.photo_psnr)
            self._store(keys[missing[index]], entry, settings)
        return [found[i] for i in range(len(photos))]

    def _protect(self, photos: list[bytes], settings, progress, face_budget: int):
        """(index, Protected or exception) for each photo, one at a time or in batches."""
        if face_budget > 1:
            if self._protect_fn is not None:
                raise ValueError("batched protection runs the engine's own protect, not a stand-in")
            from ..batching import protect_many

            yield from protect_many(photos, settings, progress, face_budget=face_budget)
            return
        protect_fn = self._protect_fn
        if protect_fn is None:
            from ..protect import protect as protect_fn
        for index, data in enumerate(photos):
            yield index, protect_fn(data, settings, progress(index))

    def _load(self, key: str) -> CachedProtection | None:
        if self.folder is None:
            return None
        blob_path, meta_path = self._paths(key)
        if not (blob_path.is_file() and meta_path.is_file()):
            return None
        meta = json.loads(meta_path.read_text())
        return CachedProtection(blob_path.read_bytes(), meta["format"], tuple(tuple(b) for b in meta["boxes"]),
                                meta["seconds"], meta["photo_psnr"], from_cache=True)

    def _store(self, key: str, entry: CachedProtection, settings) -> None:
        if self.folder is None:
            return
        blob_path, meta_path = self._paths(key)
        blob_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = blob_path.with_suffix(".bin.tmp")
        temporary.write_bytes(entry.data)
        temporary.replace(blob_path)
        meta_path.write_text(json.dumps({"format": entry.format, "boxes": entry.boxes, "seconds": entry.seconds,
                                         "photo_psnr": entry.photo_psnr, "settings": settings_key(settings)},
                                        default=list))


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
