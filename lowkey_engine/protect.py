"""`protect()`: one photo in, the protected photo out. The engine's public entry point.

    result = protect(open("me.jpg", "rb").read(), ProtectSettings.from_preset("fast"))
    open("me.protected.jpg", "wb").write(result.data)

Stages: decode -> detect every face -> one working crop per face -> LowKey attack on all faces in
one batch -> changes feathered back into the full-resolution photo -> encode in the input's
format without privacy-relevant metadata. A photo without faces comes back with its metadata
removed and its pixels untouched, and says so (`faces == ()`).

Several photos share one attack batch in two halves (batching.py plans the batches):

    photos = [prepare(image, settings, progress) for image in album]   # decode, detect, crop
    outcomes = protect_prepared(photos)     # one attack for all their faces; per photo, the
                                            # Protected or the exception that stopped it
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.profiler import record_function

from .attack.lowkey import AttackResult, LowKeyAttack, PhotoFaces, ProgressCallback
from .attack.budget import face_size_factors
from .attack.crops import CropWindow, apply_changes, widths_in_crops, working_crops
from .attack.jnd import BUDGET_MAPS, face_budget_maps
from .images.decode import DecodedImage, decode_image
from .faces.detect import Face, FaceDetector, load_detector
from .faces.mesh import load_face_mesh
from .images.encode import encode_image, strip_metadata_only
from .attack.perceptual import psnr, region_quality
from .faces.recognizers import Recognizer, load_recognizer
from .settings import ProtectSettings


@dataclass(frozen=True)
class FaceResult:
    """One protected face: its box (x1, y1, x2, y2) in photo pixels, detector score, and how
    much its box changed (before output encoding): PSNR in dB, SSIM in [-1, 1], and the CIEDE2000
    colour difference per pixel, mean and 95th percentile (about 2.3 is just noticeable), and its
    shading: RMS of the blurred change in 8-bit levels (perceptual.region_quality). With a warp
    (`warp_face_share`), `warp_share` is its longest displacement as a share of the face's width
    and `additive_delta_e*` the CIEDE2000 of the additive part alone: the protected box against
    the warped clean one (without a warp, the same as delta_e*)."""

    box: tuple[float, float, float, float]
    score: float
    psnr: float
    ssim: float
    delta_e: float = float("nan")
    delta_e_p95: float = float("nan")
    shading: float = float("nan")
    warp_share: float = 0.0
    additive_delta_e: float = float("nan")
    additive_delta_e_p95: float = float("nan")


@dataclass(frozen=True)
class Protected:
    """The protected photo (encoded bytes in the input's format) and what was done to it."""

    data: bytes
    mime: str
    format: str
    width: int
    height: int
    faces: tuple[FaceResult, ...]
    seconds: float
    device: str
    preset: str
    photo_psnr: float | None = None           # whole photo, dB; None when nothing changed
    stats: dict = field(default_factory=dict)

    @property
    def face_count(self) -> int:
        return len(self.faces)


def resolve_device(name: str) -> torch.device:
    """"auto" -> the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device")
    return device


def _no_progress(stage: str, done: int, total: int) -> None:
    """The progress callback of a caller that gave none."""


@dataclass(eq=False)
class PreparedPhoto:
    """A photo decoded, its faces found and their working crops cut: everything its attack and
    its finishing need. Holds the full-resolution pixels (3, H, W) on the engine's device.

    faces: the detector's faces (empty: nothing to attack); windows, and `attack_input` (crops,
    landmarks, masks, widths, budget maps in working pixels) for those faces; working_face_px: the
    working crops' face width, pixels (photos attack together only when theirs agree)."""

    engine: "ProtectionEngine"
    settings: ProtectSettings
    decoded: DecodedImage
    pixels: torch.Tensor
    faces: list[Face]
    progress: ProgressCallback
    started: float
    windows: list[CropWindow] = field(default_factory=list)
    working_face_px: int = 0
    attack_input: PhotoFaces | None = None
    stats: dict = field(default_factory=dict)

    @property
    def face_count(self) -> int:
        return len(self.faces)

    @property
    def pixel_count(self) -> int:
        """Width x height of the photo."""
        return self.pixels.shape[-1] * self.pixels.shape[-2]

    def batch_key(self) -> tuple:
        """Photos with equal keys can share one attack batch: same engine, settings and crop size."""
        return id(self.engine), self.settings, self.working_face_px


class ProtectionEngine:
    """The models one device needs, loaded once: detector (finding faces of at least
    `min_face_px` photo pixels) and attack ensemble."""

    def __init__(self, device: torch.device, ensemble: tuple[str, ...], min_face_px: int):
        self.device = device
        self.detector: FaceDetector = load_detector(device, min_face_size=min_face_px)
        self.recognizers: list[Recognizer] = [load_recognizer(m, device) for m in ensemble]

    def protect(self, image, settings: ProtectSettings, progress: ProgressCallback | None = None) -> Protected:
        (outcome,) = self.protect_prepared([self.prepare(image, settings, progress)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def prepare(self, image, settings: ProtectSettings, progress: ProgressCallback | None = None) -> PreparedPhoto:
        """Decode `image`, find its faces and cut their working crops (and budget maps). Raises
        ImageError for input it cannot protect, or whatever `progress` raises."""
        started = time.perf_counter()
        report = progress or _no_progress
        report("decode", 0, 1)
        with record_function("protect:decode"):
            decoded = decode_image(image, max_pixels=settings.max_pixels, max_bytes=settings.max_bytes)
            pixels = decoded.pixels.to(self.device)
        report("detect", 0, 1)
        with record_function("protect:detect"):
            faces = self.detector.detect(pixels)
        report("detect", 1, 1)
        photo = PreparedPhoto(self, settings, decoded, pixels, faces, report, started)
        if not faces:
            return photo
        with record_function("protect:working crops"):
            boxes = torch.tensor([[float(v) for v in f.box] for f in faces], device=self.device)
            landmarks = torch.stack([torch.as_tensor(f.landmarks, dtype=torch.float32) for f in faces]).to(self.device)
            largest_face = float((boxes[:, 2:] - boxes[:, :2]).amax())
            photo.working_face_px = settings.working_face_for(largest_face)
            working_size = round(photo.working_face_px * settings.crop_margin)
            photo.windows, crops, crop_landmarks, masks = working_crops(
                pixels, boxes, landmarks, margin=settings.crop_margin, working_size=working_size,
                feather=settings.feather)
            face_widths_px = boxes[:, 2] - boxes[:, 0]
            budget_scale, photo.stats = self._budget_maps(pixels, faces, face_widths_px, photo.windows, working_size,
                                                          settings)
            budget_scale = _with_face_sizes(budget_scale, face_widths_px, working_size, settings)
        widths = widths_in_crops(boxes, photo.windows, working_size)
        photo.attack_input = PhotoFaces(crops, crop_landmarks, masks, widths, budget_scale, report)
        return photo

    def protect_prepared(self, photos: Sequence[PreparedPhoto]) -> list[Protected | Exception]:
        """Attack the faces of `photos` (all prepared by this engine with one batch key, or
        without faces) in one batch, then paste, encode and measure each photo. Per photo, its
        Protected, or the exception that stopped it (raised by its progress callback, or by its
        own encoding); an error of the batch as a whole is raised."""
        with_faces = [p for p in photos if p.faces]
        if len({p.batch_key() for p in with_faces}) > 1:
            raise ValueError("photos of one attack batch need the same engine, settings and crop size")
        outcomes: dict[int, AttackResult | BaseException] = {}
        if with_faces:
            settings = with_faces[0].settings
            attack = LowKeyAttack.from_settings(settings, self.recognizers, with_faces[0].working_face_px)
            with record_function("protect:attack"):
                results = attack.run_photos([p.attack_input for p in with_faces])
            outcomes = {id(p): r for p, r in zip(with_faces, results)}
        finished: list[Protected | Exception] = []
        for photo in photos:
            outcome = outcomes.get(id(photo))
            if isinstance(outcome, BaseException):
                finished.append(outcome)
                continue
            try:
                finished.append(self._finish(photo, outcome))
            except Exception as error:  # noqa: BLE001 - one photo's failure is that photo's answer
                finished.append(error)
        return finished

    def _finish(self, photo: PreparedPhoto, outcome: AttackResult | None) -> Protected:
        """Paste the attack's change into the photo, encode it and measure what changed."""
        decoded, pixels, faces, settings = photo.decoded, photo.pixels, photo.faces, photo.settings
        _, height, width = pixels.shape
        if outcome is None:                      # no face: only the metadata goes
            encoded = strip_metadata_only(decoded)
            return Protected(encoded.data, encoded.mime, encoded.format, width, height, (),
                             time.perf_counter() - photo.started, str(self.device), settings.preset)
        with record_function("protect:paste"):
            protected = apply_changes(pixels, photo.windows, outcome.change)
            # the clean photo warped: what the additive part is measured against
            warped = pixels if outcome.displacement is None else apply_changes(pixels, photo.windows,
                                                                                outcome.warp_change)
            shares = outcome.largest_displacement_share()
            shares = [0.0] * len(faces) if shares is None else shares.tolist()
        photo.progress("encode", 0, 1)
        with record_function("protect:encode"):
            encoded = encode_image(protected.cpu(), decoded, jpeg_quality=settings.jpeg_output_quality)
        with record_function("protect:measure change"):
            results = tuple(_face_result(face, pixels, protected, warped, share) for face, share in zip(faces, shares))
        return Protected(encoded.data, encoded.mime, encoded.format, width, height, results,
                         time.perf_counter() - photo.started, str(self.device), settings.preset,
                         photo_psnr=float(psnr(protected[None], pixels[None])[0]), stats=photo.stats)

    def _budget_maps(self, pixels: torch.Tensor, faces, face_widths_px: torch.Tensor, windows, working_size: int,
                     settings: ProtectSettings) -> tuple[torch.Tensor | None, dict]:
        """The attack's budget maps for `settings.budget_map` (None = uniform) and what was done:
        stats `budget_map`, and for a map from the face mesh ("jnd", "regions") `jnd_faces` (faces
        with a mesh fit, so a map), `jnd_fallback_faces` (no mesh fit: the uniform budget) and
        `jnd_small_faces` (narrower than `budget_map_min_face_px`: the uniform budget, by choice)."""
        if settings.budget_map not in BUDGET_MAPS:
            raise ValueError(f"budget_map must be one of {', '.join(BUDGET_MAPS)}, got {settings.budget_map!r}")
        if settings.budget_map == "uniform":
            return None, {"budget_map": "uniform"}
        mapped = [i for i, width in enumerate(face_widths_px.tolist()) if width >= settings.budget_map_min_face_px]
        stats = {"budget_map": settings.budget_map, "jnd_small_faces": len(faces) - len(mapped)}
        if not mapped:
            return None, {**stats, "jnd_faces": 0, "jnd_fallback_faces": 0}
        fits: list = [None] * len(faces)
        for index, fit in zip(mapped, load_face_mesh(self.device).fit(pixels, [faces[i] for i in mapped])):
            fits[index] = fit
        maps, meshed = face_budget_maps(pixels, faces, windows, working_size, fits, settings.jnd_normalise,
                                        settings.budget_map)
        return maps, {**stats, "jnd_faces": sum(meshed), "jnd_fallback_faces": len(mapped) - sum(meshed)}


def _with_face_sizes(budget_scale: torch.Tensor | None, face_widths_px: torch.Tensor, working_size: int,
                     settings: ProtectSettings) -> torch.Tensor | None:
    """The budget map (N, 1, S, S) times each face's size factor (attack/budget.py); unchanged
    when every face gets the whole budget."""
    factors = face_size_factors(face_widths_px, settings.full_budget_face_px, settings.budget_size_exponent)
    if factors is None:
        return budget_scale
    factors = factors.view(-1, 1, 1, 1)
    if budget_scale is None:
        return factors.expand(-1, 1, working_size, working_size).contiguous()
    return budget_scale * factors


def _face_result(face, original: torch.Tensor, protected: torch.Tensor, warped: torch.Tensor,
                 warp_share: float) -> FaceResult:
    _, height, width = original.shape
    x1, y1, x2, y2 = (float(v) for v in face.box)
    left, top = max(0, int(x1)), max(0, int(y1))
    right, bottom = min(width, int(round(x2))), min(height, int(round(y2)))
    a = original[None, :, top:bottom, left:right]
    b = protected[None, :, top:bottom, left:right]
    if a.numel() == 0:                         # a box with no whole pixel inside the photo
        return FaceResult((x1, y1, x2, y2), float(face.score), float("nan"), float("nan"))
    quality = region_quality(a, b)
    additive = quality if warped is original else region_quality(warped[None, :, top:bottom, left:right], b)
    return FaceResult((x1, y1, x2, y2), float(face.score), **quality, warp_share=warp_share,
                      additive_delta_e=additive["delta_e"], additive_delta_e_p95=additive["delta_e_p95"])


_ENGINES: dict[tuple[str, tuple[str, ...], int], ProtectionEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(settings: ProtectSettings) -> ProtectionEngine:
    """The engine for the settings' device, ensemble and face size, built once and kept."""
    device = resolve_device(settings.device)
    key = (str(device), settings.ensemble, settings.min_face_px)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = ProtectionEngine(device, settings.ensemble, settings.min_face_px)
        return _ENGINES[key]


def protect(image: bytes | str | Path | Image.Image, settings: ProtectSettings | None = None,
            progress: ProgressCallback | None = None) -> Protected:
    """Protect every face in `image` (file bytes, a path, or a PIL image). Raises ImageError
    (with a protocol `code`) for input that is not a photo it can protect."""
    settings = settings or ProtectSettings()
    torch.manual_seed(settings.seed)
    return get_engine(settings).protect(image, settings, progress)


def prepare(image: bytes | str | Path | Image.Image, settings: ProtectSettings | None = None,
            progress: ProgressCallback | None = None) -> PreparedPhoto:
    """The first half of `protect()`: decode, detect, crop, on the engine the settings name.
    `progress` is kept for the photo's attack and encoding too. Raises as `protect()` does."""
    settings = settings or ProtectSettings()
    return get_engine(settings).prepare(image, settings, progress)


def protect_prepared(photos: Sequence[PreparedPhoto]) -> list[Protected | Exception]:
    """The second half: one attack batch for the faces of `photos` (which must share a batch
    key, or have no face), then each photo pasted and encoded. Per photo, in order, its Protected
    or the exception that stopped it; a failure of the whole batch is raised."""
    if not photos:
        return []
    torch.manual_seed(photos[0].settings.seed)
    return photos[0].engine.protect_prepared(photos)
