"""Several photos, one attack batch: how many faces a batch holds, and a stream of photos cut into
batches of at most that many faces.

A photo's protection does not depend on the photos it shares a batch with (attack/lowkey.py,
`run_photos`: per-photo random draws, a per-face objective), so batching changes only how fast an
album is done. What a batch buys depends on the device: on a GPU, a batch of one face leaves most
of it idle; on a 2-core CPU a face costs about a quarter less at 8 faces a batch than alone
(benchmarks/README.md, "Albums"). Memory grows with the faces of a batch (the attack's
activations) and with its photos' pixels (each prepared photo holds its full-resolution pixels),
so a batch is bounded by both.

    for index, outcome in protect_many(paths, ProtectSettings.from_preset("fast"), face_budget=8):
        ...   # outcome: Protected, or the exception that stopped that photo (ImageError, ...)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .attack.crops import feather_mask
from .attack.lowkey import LowKeyAttack, PhotoFaces, ProgressCallback
from .faces.align import ARCFACE_TEMPLATE_112
from .protect import PreparedPhoto, Protected, get_engine, prepare, protect_prepared
from .settings import ProtectSettings

log = logging.getLogger(__name__)

#: Faces a batch holds when nothing else is said: where a 2-core CPU stops gaining (benchmarks).
DEFAULT_FACE_BUDGET = 8
#: Pixels (width x height) of the photos one batch holds, all together, when nothing else is said:
#: two photos at the engine's own per-photo cap (a larger single photo still runs, alone).
DEFAULT_BATCH_PIXELS = 100_000_000
#: Batch sizes `measure_face_budget` times, and how close to the best time a face must come.
BUDGET_CANDIDATES = (1, 2, 4, 8, 16, 32, 64)
BUDGET_TOLERANCE = 0.01
#: Timed runs of each batch size (the fastest counts): one run's noise on a CPU is a few per cent,
#: as large as the difference between neighbouring sizes near the best.
BUDGET_REPEATS = 2
#: Side of the aligned face the ArcFace template's points are given on, pixels.
ALIGNED_FACE_PX = 112


@dataclass
class Batch:
    """Prepared photos that will attack together (and their indices in the caller's stream), with
    their faces and pixels counted."""

    photos: list[PreparedPhoto] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    faces: int = 0
    pixels: int = 0

    def admits(self, photo: PreparedPhoto, face_budget: int, max_pixels: int) -> bool:
        """Whether `photo` may join: an empty batch takes any photo; otherwise the photo must share
        the batch's key and keep it within both budgets."""
        if not self.photos:
            return True
        return (photo.batch_key() == self.photos[0].batch_key()
                and self.faces + photo.face_count <= face_budget
                and self.pixels + photo.pixel_count <= max_pixels)

    def add(self, photo: PreparedPhoto, index: int = 0) -> None:
        self.photos.append(photo)
        self.indices.append(index)
        self.faces += photo.face_count
        self.pixels += photo.pixel_count


def protect_many(images: Iterable, settings: ProtectSettings,
                 progress: Callable[[int], ProgressCallback | None] | None = None, *,
                 face_budget: int = DEFAULT_FACE_BUDGET, max_batch_pixels: int = DEFAULT_BATCH_PIXELS,
                 before_attack: Callable[[], None] | None = None) -> Iterator[tuple[int, Protected | Exception]]:
    """Protect `images` (bytes, paths or PIL images), their faces attacked in batches of at most
    `face_budget` faces (a photo with more attacks alone) and `max_batch_pixels` pixels.
    `progress(index)` gives photo `index`'s progress callback (or None); `before_attack()` runs
    before each batch's attack (the command line sets its threads there: runtime.py). Yields
    (index, outcome) as photos finish, in batch order: photos without a face and photos that fail
    to decode at once, the others when their batch is done. An outcome is the Protected photo, or
    the exception that stopped it (ImageError, OSError, or what its progress callback raised)."""
    if face_budget < 1:
        raise ValueError(f"face_budget must be >= 1, got {face_budget}")
    batch = Batch()
    for index, image in enumerate(images):
        try:
            photo = prepare(image, settings, progress(index) if progress else None)
        except Exception as error:  # noqa: BLE001 - a photo that cannot be prepared is that photo's answer
            yield index, error
            continue
        if not photo.faces:
            yield index, protect_prepared([photo])[0]
            continue
        if not batch.admits(photo, face_budget, max_batch_pixels):
            yield from _run(batch, before_attack)
            batch = Batch()
        batch.add(photo, index)
    yield from _run(batch, before_attack)


def _run(batch: Batch, before_attack: Callable[[], None] | None) -> Iterator[tuple[int, Protected | Exception]]:
    if batch.photos:
        if before_attack:
            before_attack()
        yield from zip(batch.indices, protect_prepared(batch.photos))


def measure_face_budget(settings: ProtectSettings, *, candidates: Sequence[int] = BUDGET_CANDIDATES,
                        tolerance: float = BUDGET_TOLERANCE, repeats: int = BUDGET_REPEATS,
                        max_seconds: float = 60.0) -> int:
    """The smallest batch (from `candidates`, in faces) whose time per face is within `tolerance`
    of the best measured, on the device `settings` name: beyond it a larger batch only makes its
    photos wait longer. Each size runs one attack step of the settings' ensemble on synthetic faces
    (timing does not depend on the pixels), after a warm-up step at that size, `repeats` times (the
    fastest counts). The sizes are tried smallest first; the measuring stops at the first that is
    slower a face than the best so far by more than `tolerance` (the curve has passed its low), at
    the first that runs out of memory, or when `max_seconds` have gone."""
    engine = get_engine(settings)
    size = round(settings.working_face_px * settings.crop_margin)
    face_scale = settings.working_face_px / ALIGNED_FACE_PX      # the template's face, grown to the working face
    template = torch.tensor(ARCFACE_TEMPLATE_112) * face_scale + (size - settings.working_face_px) / 2
    attack = LowKeyAttack.from_settings(settings.replace(steps=1), engine.recognizers)
    generator = torch.Generator().manual_seed(0)
    per_face: dict[int, float] = {}
    started = time.perf_counter()
    for faces in sorted(candidates):
        crops = (torch.rand(faces, 3, size, size, generator=generator) * 0.4 + 0.3).to(engine.device)
        photo = PhotoFaces(crops, template.expand(faces, 5, 2).to(engine.device),
                           feather_mask(size, settings.feather, engine.device).expand(faces, 1, size, size),
                           torch.full((faces,), float(settings.working_face_px), device=engine.device))
        try:
            attack.run_photos([photo])                 # warm-up: the kernels for this batch size
            times = []
            for _ in range(repeats):
                _synchronise(engine.device)
                tick = time.perf_counter()
                attack.run_photos([photo])
                _synchronise(engine.device)
                times.append(time.perf_counter() - tick)
        except torch.OutOfMemoryError:
            log.info("face budget: %d faces a batch ran out of memory on %s", faces, engine.device)
            break
        per_face[faces] = min(times) / faces
        if (per_face[faces] > min(per_face.values()) * (1 + tolerance)
                or time.perf_counter() - started > max_seconds):
            break
    best = min(per_face.values())
    chosen = min(f for f, seconds in per_face.items() if seconds <= best * (1 + tolerance))
    log.info("face budget on %s: %d faces a batch (seconds a face and step: %s)", engine.device, chosen,
             ", ".join(f"{f}: {s:.3f}" for f, s in per_face.items()))
    return chosen


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
