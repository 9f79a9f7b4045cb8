"""`lowkey eval`: does protection stop face identification? The LowKey paper's protocol, measured.

    results = run_evaluation(EvalConfig(root="data/faces/lfw-dev", presets=("fast",), limit=20))

Protocol (identification, Cherepanova et al. 2021, section 4):
- The folder holds `<identity>/<photo>`. Per identity, `gallery` photos (chosen with the seed) form
  its gallery, the rest are its probes. Identities with fewer than `gallery + 1` photos are skipped.
- Gallery photos are what a person uploaded: they are protected with each preset, then go through
  what a social site does to uploads (real JPEG re-encoding and real resizing with Pillow,
  `UploadTransform`), then a recognizer's own detector looks for the face again. Probes are the
  clean photos an adversary holds.
- For each probe, its own identity's gallery is protected while every other identity's gallery
  stays clean (`metrics.own_gallery_swapped`). The clean baseline runs the same search with every
  gallery clean. Both galleries pass through the same upload transform, so the two numbers differ
  only by the protection.
- Gallery template = the nearest gallery PHOTO: identities are ranked by their best-scoring photo
  (`metrics.identity_ranks`); rank-1 = share of probes whose nearest gallery photo is their own
  identity, rank-5 = share whose identity is among the 5 best.
- A gallery photo in which the recognizer's own detector no longer finds the face is not in the
  gallery; when that empties a probe's own gallery the probe counts as protected (a miss), and the
  share is reported separately (`probes_own_gallery_gone`, `gallery_undetected_*`). A probe whose
  clean photo has no face found is left out for that recognizer (`probes_missed`).
- Which face in a photo: the detection nearest the photo's centre (the subject of a portrait).

Recognizers: every attacked ensemble member (white-box), `dlib-resnet` (held out, never attacked)
and, with `real_dlib=True`, the real dlib pipeline (`real_dlib.py`: its own HOG detector,
alignment and model; a true black box). All but real dlib see faces through our MTCNN detector run
on the photo as it reaches them (after protection and the upload transform).

Protected photos are cached on disk by content and settings (`cache.ProtectCache`), so a rerun, another
recognizer or another transform costs no new attack.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..attack.perceptual import REGION_METRICS
from ..faces.recognizers import DEFAULT_ENSEMBLE
from .cache import CachedProtection, ObservationCache, ProtectCache, ProtectFunction
from .datasets import LabelledPhoto, labelled_photos, most_central
from .metrics import identity_ranks, own_gallery_swapped, rank_k_accuracy, similarity_scores
from .observers import REAL_DLIB_ID, MtcnnObserver, Observer
from .operating_points import operating_point, pair_match_rate
from .uploads import parse_transform

#: What a social site does to uploads, as `UploadTransform` names (see `uploads.parse_transform`).
DEFAULT_TRANSFORMS = ("none", "jpeg90", "jpeg75", "jpeg60", "half", "max1080", "half+jpeg75",
                      "max1080+jpeg75")
DEFAULT_RECOGNIZERS = (*DEFAULT_ENSEMBLE, "dlib-resnet")
DEFAULT_RANKS = (1, 5)
#: Photos per preset kept for the contact sheet.
CONTACT_SHEET_PHOTOS = 6
#: Photos per detector call when recognizing.
OBSERVE_BATCH = 16


def role_of(recognizer_id: str, settings) -> str:
    if recognizer_id == REAL_DLIB_ID:
        return "black-box"
    if recognizer_id in settings.ensemble:
        return "attacked"
    return "held-out"


def leave_one_out(pool: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Every ensemble of all but one of `pool` (each member held out once); needs 2+ members."""
    if len(pool) < 2:
        raise ValueError("leave-one-out needs at least two recognizers to attack")
    return tuple(tuple(m for m in pool if m != left_out) for left_out in pool)


def run_label(preset: str, ensemble: Sequence[str] | None) -> str:
    """How a run (a preset, attacking its own ensemble or the one given) is named in results."""
    return preset if ensemble is None else f"{preset} [{'+'.join(ensemble)}]"


# --- the run -------------------------------------------------------------------------------------

@dataclass
class EvalConfig:
    root: str | Path
    presets: tuple[str, ...] = ("fast",)
    overrides: dict[str, Any] = field(default_factory=dict)   # ProtectSettings fields, every preset
    gallery: int = 2                    # protected gallery photos per identity; the rest are probes
    limit: int | None = None            # first N identities (sorted by name) with enough photos
    protect_limit: int | None = None    # protect (and probe) only the first N of them; the rest are distractors
    max_per_identity: int | None = None
    seed: int = 0                       # gallery/probe split and the attack's seed
    recognizers: tuple[str, ...] = DEFAULT_RECOGNIZERS
    real_dlib: bool = False
    transforms: tuple[str, ...] = DEFAULT_TRANSFORMS
    ranks: tuple[int, ...] = DEFAULT_RANKS
    device: str = "auto"
    cache_dir: str | Path | None = None
    lpips: bool = True                  # report LPIPS when its real backbone is fetched
    #: ensembles to attack with, each combined with each preset; empty = each preset's own ensemble.
    #: Every recognizer not in a run's ensemble is reported as held out for that run.
    ensembles: tuple[tuple[str, ...], ...] = ()
    #: faces attacked together across gallery photos (batching.py); 1 = one photo at a time, the
    #: path every recorded number used. Batched photos are cached apart from one-at-a-time ones.
    face_budget: int = 1

    def settings(self) -> dict[str, Any]:
        """Run label (`run_label`) -> the ProtectSettings that run protects with."""
        from ..settings import ProtectSettings

        runs = {}
        for preset in self.presets:
            base = ProtectSettings.from_preset(preset, **{"seed": self.seed, "device": self.device, **self.overrides})
            for ensemble in self.ensembles or (None,):
                runs[run_label(preset, ensemble)] = base if ensemble is None else base.replace(ensemble=tuple(ensemble))
        return runs

    def recognizers_to_observe(self) -> tuple[str, ...]:
        """The recognizers asked for, plus every attacked one (so white-box numbers are reported)."""
        attacked = [m for s in self.settings().values() for m in s.ensemble]
        return tuple(dict.fromkeys([*self.recognizers, *attacked]))


def split_gallery_probes(photos: Sequence[LabelledPhoto], gallery: int, seed: int
                         ) -> tuple[list[LabelledPhoto], list[LabelledPhoto]]:
    """Per identity (with at least gallery + 1 photos), `gallery` photos drawn with the seed form
    its gallery and the rest its probes. The draw depends only on the seed and the identity's own
    photos, so --limit does not change which photos of an identity are gallery photos."""
    if gallery < 1:
        raise ValueError("the gallery needs at least one photo per identity")
    by_identity: dict[str, list[LabelledPhoto]] = {}
    for photo in photos:
        by_identity.setdefault(photo.identity, []).append(photo)
    gallery_photos, probes = [], []
    for identity in sorted(by_identity):
        members = sorted(by_identity[identity], key=lambda p: p.path.name)
        if len(members) < gallery + 1:
            continue
        chosen = set(random.Random(f"{seed}:{identity}").sample(range(len(members)), gallery))
        gallery_photos += [p for i, p in enumerate(members) if i in chosen]
        probes += [p for i, p in enumerate(members) if i not in chosen]
    return gallery_photos, probes


def _summary(values: Iterable[float]) -> dict[str, float] | None:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "min": min(values),
            "max": max(values), "n": len(values)}


def _face_region(box, width: int, height: int) -> tuple[slice, slice] | None:
    x1, y1, x2, y2 = box
    left, top = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
    right, bottom = min(width, int(math.ceil(x2))), min(height, int(math.ceil(y2)))
    if right - left < 11 or bottom - top < 11:        # SSIM's window
        return None
    return slice(top, bottom), slice(left, right)


def photo_quality(original: torch.Tensor, protected: torch.Tensor, box, lpips_metric=None) -> dict[str, float | None]:
    """PSNR/SSIM of the whole photo; the face box's `perceptual.region_quality` (PSNR, SSIM,
    CIEDE2000 mean and 95th percentile, shading) as `face_*`, and its LPIPS when a real LPIPS is
    given; None where there is no face box. Between two decoded photos (3, H, W) in [0, 1]."""
    from ..attack.perceptual import psnr, region_quality, ssim

    a, b = original[None], protected[None]
    quality = {"photo_psnr": float(psnr(b, a)[0]), "photo_ssim": float(ssim(b, a)[0]),
               **{f"face_{k}": None for k in REGION_METRICS}, "face_lpips": None}
    region = None if box is None else _face_region(box, original.shape[2], original.shape[1])
    if region is not None:
        rows, cols = region
        fa, fb = a[..., rows, cols], b[..., rows, cols]
        quality.update({f"face_{k}": v for k, v in region_quality(fa, fb).items()})
        if lpips_metric is not None and min(fa.shape[-2:]) >= 32:
            with torch.no_grad():
                quality["face_lpips"] = float(lpips_metric(fb, fa)[0])
    return quality


def _try_lpips(device) -> tuple[Any, str | None]:
    from .lpips_metric import LPIPS_NET, load_lpips
    from ..faces.paths import MissingWeightsError

    try:
        return load_lpips(device), f"LPIPS ({LPIPS_NET}, fetched ImageNet backbone)"
    except MissingWeightsError as missing:
        return None, f"not reported: {missing}"


def _progress_bar(quiet: bool):
    from tqdm import tqdm

    def make(iterable=None, **kwargs):
        return tqdm(iterable, disable=quiet, leave=False, dynamic_ncols=True, **kwargs)

    return make


def run_evaluation(config: EvalConfig, *, protect_fn: ProtectFunction | None = None,
                   observers: Sequence[Observer] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run the protocol (module docstring). Returns every number and the settings as a JSON-ready
    dict, plus under the key "_samples" the pixels the contact sheet needs (not JSON)."""
    from ..images.decode import decode_image
    from ..protect import resolve_device

    started = time.perf_counter()
    bar = _progress_bar(quiet)
    settings_by_preset = config.settings()
    device = resolve_device(config.device)
    transforms = [parse_transform(t) for t in config.transforms]

    photos = labelled_photos(config.root, min_per_identity=config.gallery + 1,
                             max_per_identity=config.max_per_identity, max_identities=config.limit)
    gallery_photos, probe_photos = split_gallery_probes(photos, config.gallery, config.seed)
    if not probe_photos:
        raise ValueError(f"no identity under {config.root} has more than {config.gallery} photos")
    identities = sorted({p.identity for p in gallery_photos})
    # Subjects: the identities whose galleries are protected and whose probes search. The others
    # only add their clean galleries to the search (distractors), as a face database would.
    subjects = set(identities[:config.protect_limit] if config.protect_limit else identities)
    probe_photos = [p for p in probe_photos if p.identity in subjects]
    subject_gallery = [i for i, p in enumerate(gallery_photos) if p.identity in subjects]
    label = {name: i for i, name in enumerate(identities)}
    gallery_ids = torch.tensor([label[p.identity] for p in gallery_photos])
    probe_ids = torch.tensor([label[p.identity] for p in probe_photos])
    originals = [p.path.read_bytes() for p in gallery_photos]

    if observers is None:
        observers = [MtcnnObserver(config.recognizers_to_observe(), device)]
        if config.real_dlib:
            from .real_dlib import RealDlibObserver
            observers.append(RealDlibObserver())
    infos = [info for o in observers for info in o.recognizers]

    # 1. protect every gallery photo with every preset (cached: no attack on a rerun)
    cache = ProtectCache(config.cache_dir, protect_fn)
    lpips_metric, lpips_label = _try_lpips(device) if config.lpips else (None, "not asked for")
    protected: dict[str, list[CachedProtection]] = {}
    protected_data: dict[str, list[bytes]] = {}      # every gallery photo as uploaded, per preset
    quality: dict[str, dict[str, Any]] = {}
    samples: dict[str, Any] = {"photos": [], "protected": {}}
    for preset, settings in settings_by_preset.items():
        results, per_photo = [], []
        step_bars: dict[int, Any] = {}

        def progress_of(k: int, settings=settings, step_bars=step_bars):
            def progress(stage, done, total):                   # gallery photo k's steps
                if stage == "attack":
                    steps = step_bars.setdefault(k, bar(total=settings.steps, desc=f"photo {k + 1}", unit="step"))
                    steps.n = done
                    steps.refresh()
            return progress

        with bar(total=len(subject_gallery), desc=f"protect ({preset})", unit="photo") as photos_bar:
            entries = cache.get_many([originals[i] for i in subject_gallery], settings, progress_of, config.face_budget)
            photos_bar.update(len(entries))
        for steps in step_bars.values():
            steps.close()
        for index, entry in zip(subject_gallery, entries):
            photo, data = gallery_photos[index], originals[index]
            results.append(entry)
            original_pixels = decode_image(data).pixels
            protected_pixels = decode_image(entry.data).pixels
            box = most_central([_Boxed(b) for b in entry.boxes], original_pixels.shape[2], original_pixels.shape[1])
            per_photo.append({**photo_quality(original_pixels, protected_pixels, None if box is None else box.box,
                                              lpips_metric),
                              "bytes_ratio": len(entry.data) / len(data)})
            if len(results) <= CONTACT_SHEET_PHOTOS:
                if len(samples["photos"]) < len(results):
                    samples["photos"].append((f"{photo.identity}/{photo.path.name}", original_pixels))
                samples["protected"].setdefault(preset, []).append(protected_pixels)
        protected[preset] = results
        as_uploaded = list(originals)            # distractors' galleries stay clean
        for index, entry in zip(subject_gallery, results):
            as_uploaded[index] = entry.data
        protected_data[preset] = as_uploaded
        quality[preset] = {
            **{k: _summary(q[k] for q in per_photo)
               for k in ("photo_psnr", "photo_ssim", *(f"face_{m}" for m in REGION_METRICS), "bytes_ratio")},
            "face_lpips": _summary(q["face_lpips"] for q in per_photo) if lpips_metric is not None else None,
            "photos": len(results),
            "photos_without_face_protected": sum(1 for r in results if not r.boxes),
            "attack_seconds_per_photo": _summary(r.seconds for r in results if r.boxes),
            "computed_now": sum(1 for r in results if not r.from_cache),
        }

    # 2. what each recognizer sees: probes as they are, galleries after each upload transform
    #    (each distinct photo is looked at once: identical bytes share their observation)
    #    (on disk under the cache folder too: clean photos look the same to every later run)
    seen = ObservationCache(None if config.cache_dir is None else Path(config.cache_dir) / "observations",
                            observers)

    def observe(photos: list[bytes], progress_bar) -> list[dict[str, torch.Tensor]]:
        keys = [hashlib.sha256(data).hexdigest() for data in photos]
        todo = list({k: d for k, d in zip(keys, photos) if k not in seen}.items())
        for start in range(0, len(todo), OBSERVE_BATCH):
            seen.observe(todo[start:start + OBSERVE_BATCH])
            progress_bar.update(len(todo[start:start + OBSERVE_BATCH]))
        progress_bar.update(len(photos) - len(todo))
        return [seen[k] for k in keys]

    with bar(total=len(probe_photos), desc="recognize probes", unit="photo") as progress_bar:
        probe_views = observe([p.path.read_bytes() for p in probe_photos], progress_bar)
    gallery_views: dict[tuple[str | None, str], list[dict[str, torch.Tensor]]] = {}
    jobs = [(None, t) for t in transforms] + [(p, t) for p in settings_by_preset for t in transforms]
    with bar(total=len(jobs) * len(gallery_photos), desc="recognize galleries", unit="photo") as progress_bar:
        for preset, transform in jobs:
            sources = originals if preset is None else protected_data[preset]
            gallery_views[(preset, transform.name)] = observe([transform.apply(d) for d in sources], progress_bar)

    # 3. the searches
    rows = []
    for info in infos:
        probe_found = torch.tensor([info.id in v for v in probe_views])
        if not bool(probe_found.any()):
            continue
        dim = next(v[info.id] for v in probe_views if info.id in v).shape[0]
        probes = torch.stack([v.get(info.id, torch.zeros(dim)) for v in probe_views])[probe_found]
        kept_ids = probe_ids[probe_found]

        def gallery_matrix(views, info=info, dim=dim, probes=probes):
            present = torch.tensor([info.id in v for v in views])
            embeddings = torch.stack([v.get(info.id, torch.zeros(dim)) for v in views])
            return similarity_scores(probes, embeddings, present, info.metric), present

        point = operating_point(info.id)
        same_person = kept_ids[:, None] == gallery_ids[None, :]      # every (probe, own gallery photo) pair
        for transform in transforms:
            clean_scores, clean_present = gallery_matrix(gallery_views[(None, transform.name)])
            clean_ranks = identity_ranks(clean_scores, gallery_ids, kept_ids)
            pair_match_clean = pair_match_rate(clean_scores, same_person, point) if point else None
            for preset, settings in settings_by_preset.items():
                protected_scores, protected_present = gallery_matrix(gallery_views[(preset, transform.name)])
                mixed = own_gallery_swapped(clean_scores, protected_scores, gallery_ids, kept_ids)
                ranks = identity_ranks(mixed, gallery_ids, kept_ids)
                own_left = torch.tensor([bool(protected_present[gallery_ids == i].any()) for i in kept_ids])
                row = {"recognizer": info.id, "role": role_of(info.id, settings), "detector": info.detector,
                       "preset": preset, "transform": transform.name,
                       "probes": int(probe_found.sum()), "probes_missed": int((~probe_found).sum()),
                       "gallery_photos": len(gallery_photos),
                       "gallery_undetected_clean": float((~clean_present).double().mean()),
                       "gallery_undetected_protected": float((~protected_present).double().mean()),
                       "probes_own_gallery_gone": float((~own_left).double().mean()) if len(own_left) else float("nan")}
                for k in config.ranks:
                    row[f"rank{k}_clean"] = rank_k_accuracy(clean_ranks, k)
                    row[f"rank{k}_protected"] = rank_k_accuracy(ranks, k)
                # a probe's own gallery photos are all protected: its pairs are with those photos
                row.update({"pairs": int(same_person.sum()), "pair_match_clean": pair_match_clean,
                            "pair_match_protected": pair_match_rate(protected_scores, same_person, point)
                            if point else None})
                rows.append(row)

    return {
        "protocol": {
            "setting": "identification (LowKey paper): own gallery protected, other identities' galleries clean, "
                       "clean probes; the clean baseline searches all-clean galleries",
            "gallery_template": "nearest gallery photo (identities ranked by their best-scoring photo)",
            "pair_match": "share of (own gallery photo, clean probe) pairs the recognizer calls the same person "
                          "at its operating point (operating_points.py); a gallery face not found never matches",
            "undetected": "a gallery photo whose face the recognizer's detector no longer finds is left out of the "
                          "gallery (counts as protected); probes whose clean face is not found are left out",
            "transforms": "applied with Pillow to the encoded gallery photos (clean and protected alike): "
                          "downscale (LANCZOS) then JPEG; probes untouched",
        },
        "config": {
            "root": str(config.root), "presets": list(config.presets), "overrides": config.overrides,
            "gallery_per_identity": config.gallery, "limit": config.limit,
            "protect_limit": config.protect_limit, "seed": config.seed,
            "recognizers": [dataclasses.asdict(i) for i in infos],
            "transforms": [dataclasses.asdict(t) for t in transforms],
            "ensembles": [list(e) for e in config.ensembles],
            "operating_points": {i.id: dataclasses.asdict(point) for i in infos
                                 if (point := operating_point(i.id)) is not None},
            "ranks": list(config.ranks), "device": str(device), "face_budget": config.face_budget,
            "cache_dir": None if config.cache_dir is None else str(config.cache_dir),
        },
        "settings": {p: dataclasses.asdict(s) for p, s in settings_by_preset.items()},
        "dataset": {"identities": len(identities), "subjects": len(subjects), "gallery_photos": len(gallery_photos),
                    "protected_gallery_photos": len(subject_gallery), "probes": len(probe_photos)},
        "perceptual": {"lpips": lpips_label},
        "quality": quality,
        "results": rows,
        "cache": {"hits": cache.hits, "misses": cache.misses,
                  "observations": {"from_disk": seen.hits, "computed_now": seen.misses}},
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "seconds": time.perf_counter() - started},
        "_samples": samples,
    }


@dataclass(frozen=True)
class _Boxed:
    box: tuple[float, float, float, float]
