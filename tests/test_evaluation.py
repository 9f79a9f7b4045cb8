"""`lowkey eval`: identification metrics on hand-made cases, the protocol with a fake attack and a
fake recognizer (answers known in advance), the protected-photo cache, the upload transforms, and
one tiny end-to-end run with the real models."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from lowkey_engine.evaluation.datasets import LabelledPhoto
from lowkey_engine.evaluation.cache import ProtectCache, cache_key
from lowkey_engine.evaluation.observers import RecognizerInfo
from lowkey_engine.evaluation.operating_points import OPERATING_POINTS, OperatingPoint
from lowkey_engine.evaluation.uploads import parse_transform
from lowkey_engine.evaluation.protocol import (EvalConfig, leave_one_out, run_evaluation,
                                               split_gallery_probes)
from lowkey_engine.evaluation.metrics import (identity_ranks, own_gallery_swapped, rank_k_accuracy,
                                   similarity_scores)
from lowkey_engine.evaluation.report import write_report
from lowkey_engine.settings import ProtectSettings

INF = float("inf")


# --- metrics ------------------------------------------------------------------------------------

def test_ranks_by_nearest_gallery_photo():
    # gallery photos of identities 0,0,1,2; probes of identities 0, 1, 2
    gallery = [0, 0, 1, 2]
    scores = torch.tensor([
        [0.2, 0.9, 0.5, 0.1],    # id 0's best photo (0.9) beats everybody: rank 1
        [0.8, 0.1, 0.7, 0.3],    # id 1 (0.7) behind id 0's best photo (0.8): rank 2
        [0.9, 0.9, 0.6, 0.5],    # id 2 (0.5) behind ids 0 and 1: rank 3
    ])
    ranks = identity_ranks(scores, gallery, [0, 1, 2])
    assert ranks.tolist() == [1, 2, 3]
    assert rank_k_accuracy(ranks, 1) == pytest.approx(1 / 3)
    assert rank_k_accuracy(ranks, 2) == pytest.approx(2 / 3)
    assert rank_k_accuracy(ranks, 5) == 1.0


def test_rank5_of_known_embeddings():
    # seven identities, one gallery photo each along a basis vector; the probe of identity 6 is
    # closest to identities 0..5 in that order, and to itself least of all: rank 7
    gallery = torch.eye(7)
    probe_own_last = torch.tensor([[0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])
    probe_own_first = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])
    probes = torch.nn.functional.normalize(torch.cat([probe_own_last, probe_own_first, probe_own_first]), dim=1)
    scores = similarity_scores(probes, gallery)
    ranks = identity_ranks(scores, list(range(7)), [6, 6, 2])
    assert ranks.tolist() == [7, 1, 5]
    assert rank_k_accuracy(ranks, 1) == pytest.approx(1 / 3)
    assert rank_k_accuracy(ranks, 5) == pytest.approx(2 / 3)


def test_ties_count_against_and_a_vanished_gallery_is_a_miss():
    scores = torch.tensor([[0.5, 0.5, 0.1], [-INF, 0.9, 0.8]])
    ranks = identity_ranks(scores, [0, 1, 2], [0, 0])
    assert ranks[0] == 2                   # a tie with identity 1: not a rank-1 hit
    assert ranks[1] == INF                 # identity 0's only gallery photo is gone
    assert rank_k_accuracy(ranks, 5) == 0.5
    assert math.isnan(rank_k_accuracy(torch.tensor([]), 1))


def test_similarity_masks_missing_gallery_photos_and_compares_like_dlib():
    probes = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    assert similarity_scores(probes, gallery, torch.tensor([True, False, True])).tolist() == [[1.0, -INF, 3.0]]
    distances = similarity_scores(probes, gallery, metric="euclidean")
    assert distances[0].tolist() == pytest.approx([0.0, -math.sqrt(2), -math.sqrt(20)])


def test_own_gallery_protected_others_clean():
    clean = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    protected = -clean
    gallery, probes = [0, 1, 1], [1, 0]
    mixed = own_gallery_swapped(clean, protected, gallery, probes)
    # probe 0 (identity 1) meets identity 1's photos (columns 1, 2) protected; probe 1 (identity 0) column 0
    assert mixed.tolist() == [[1.0, -2.0, -3.0], [-4.0, 5.0, 6.0]]


# --- split, transforms, cache ---------------------------------------------------------------------

def _photos(counts: dict[str, int]) -> list[LabelledPhoto]:
    return [LabelledPhoto(name, Path(f"/x/{name}/{name}_{i:04d}.jpg")) for name, n in counts.items() for i in range(n)]


def test_split_is_repeatable_disjoint_and_skips_small_identities():
    photos = _photos({"ann": 5, "bob": 3, "cy": 2, "dee": 8})
    gallery, probes = split_gallery_probes(photos, gallery=2, seed=4)
    assert {p.identity for p in gallery} == {"ann", "bob", "dee"}          # cy has no probe left
    assert all(sum(p.identity == i for p in gallery) == 2 for i in ("ann", "bob", "dee"))
    assert len(probes) == 3 + 1 + 6
    assert not {p.path for p in gallery} & {p.path for p in probes}
    assert split_gallery_probes(photos, 2, 4) == (gallery, probes)
    alone, _ = split_gallery_probes(_photos({"dee": 8}), 2, 4)             # --limit changes nothing for dee
    assert [p.path for p in alone] == [p.path for p in gallery if p.identity == "dee"]


def _encoded(width: int, height: int, fmt: str = "PNG", colour=(200, 120, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("name, size, expected_size, expected_format", [
    ("half", (300, 200), (150, 100), "PNG"),
    ("jpeg75", (300, 200), (300, 200), "JPEG"),
    ("half+jpeg60", (300, 200), (150, 100), "JPEG"),
    ("max1080", (2000, 1000), (1080, 540), "PNG"),
    ("max1080+jpeg90", (1000, 2400), (450, 1080), "JPEG"),
])
def test_upload_transforms_resize_and_reencode(name, size, expected_size, expected_format):
    out = parse_transform(name).apply(_encoded(*size))
    with Image.open(io.BytesIO(out)) as image:
        assert image.size == expected_size and image.format == expected_format


def test_transforms_that_change_nothing_return_the_same_bytes():
    data = _encoded(250, 250, "JPEG")
    assert parse_transform("none").apply(data) is data
    assert parse_transform("max1080").apply(data) is data
    with pytest.raises(ValueError):
        parse_transform("jpeg75+blur")
    with pytest.raises(ValueError):
        parse_transform("jpeg0")


class FakeProtect:
    """Inverts the photo's colours (a yellow photo turns black), one "face" over the whole photo."""

    def __init__(self):
        self.calls = 0

    def __call__(self, data, settings, progress=None):
        self.calls += 1
        if progress:
            progress("attack", settings.steps, settings.steps)
        with Image.open(io.BytesIO(data)) as opened:
            pixels = np.asarray(opened.convert("RGB")).astype(np.float32) / 255
        r, g, b = pixels.reshape(-1, 3).mean(0)
        changed = np.zeros_like(pixels) if (r > 0.5 and g > 0.5 and b < 0.5) else 1 - pixels
        out = io.BytesIO()
        Image.fromarray((changed * 255).round().astype(np.uint8)).save(out, "PNG")
        height, width = pixels.shape[:2]
        return SimpleNamespace(data=out.getvalue(), format="PNG", faces=(SimpleNamespace(box=(0, 0, width, height)),),
                               seconds=0.01, photo_psnr=5.0)


def test_cache_returns_the_stored_photo_without_protecting_again(tmp_path):
    fake = FakeProtect()
    cache = ProtectCache(tmp_path / "cache", fake)
    photo = _encoded(40, 30, colour=(10, 200, 30))
    settings = ProtectSettings.from_preset("fast")
    first = cache.get(photo, settings)
    # a rerun, on another device and with other input limits (neither changes the pixels)
    again = ProtectCache(tmp_path / "cache", fake).get(photo, settings.replace(device="cpu", max_pixels=10**6))
    assert fake.calls == 1
    assert again.from_cache and not first.from_cache
    assert again.data == first.data and again.boxes == ((0.0, 0.0, 40.0, 30.0),)
    ProtectCache(tmp_path / "cache", fake).get(photo, settings.replace(steps=3))       # new settings: new attack
    ProtectCache(tmp_path / "cache", fake).get(_encoded(40, 30), settings)            # new photo: new attack
    assert fake.calls == 3
    assert cache_key(photo, settings) != cache_key(photo, settings.replace(seed=1))
    # photos attacked in batches are kept apart from those attacked one at a time
    assert cache_key(photo, settings) == cache_key(photo, settings, face_budget=1)
    assert len({cache_key(photo, settings, face_budget=b) for b in (1, 4, 8)}) == 3
    with pytest.raises(ValueError, match="stand-in"):
        ProtectCache(tmp_path / "cache", fake).get_many([photo], settings, face_budget=4)


def test_a_batched_evaluation_caches_what_it_protected_apart(tmp_path, faces_dir):
    cache = ProtectCache(tmp_path / "cache")
    lfw = sorted(p for p in (faces_dir / "lfw-dev").iterdir() if p.is_dir())[:3]
    photos = [sorted(folder.iterdir())[0].read_bytes() for folder in lfw]
    settings = ProtectSettings.from_preset("fast", steps=2, device="cpu")
    batched = cache.get_many(photos, settings, face_budget=4)
    assert cache.misses == 3 and all(len(entry.boxes) == 1 for entry in batched)
    again = ProtectCache(tmp_path / "cache").get_many(photos, settings, face_budget=4)
    assert [e.data for e in again] == [e.data for e in batched] and all(e.from_cache for e in again)
    alone = ProtectCache(tmp_path / "cache").get(photos[1], settings)
    assert not alone.from_cache


# --- the protocol, with a fake recognizer --------------------------------------------------------

#: Each identity is a colour; the fake recognizer's embedding is the photo's mean colour around
#: mid-grey, so inverted colours point the opposite way.
COLOURS = {"ann": (230, 30, 30), "bob": (30, 230, 30), "cy": (30, 30, 230), "dee": (230, 230, 30)}


class FakeObserver:
    """Mean colour as the embedding; a (nearly) black photo has no face."""

    recognizers = (RecognizerInfo("colour", "cosine", "brightness"),)

    def observe(self, data):
        with Image.open(io.BytesIO(data)) as opened:
            mean = torch.tensor(np.asarray(opened.convert("RGB")), dtype=torch.float32).reshape(-1, 3).mean(0) / 255
        if mean.max() < 0.1:
            return {}
        return {"colour": torch.nn.functional.normalize(mean - 0.5, dim=0)}


def _colour_folder(root: Path, photos_each: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(photos_each):
            noise = rng.integers(-15, 16, size=(48, 40, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i}.png")
    return root


def test_protocol_with_a_fake_attack_and_recognizer(tmp_path, monkeypatch):
    # "colour" calls two photos the same person above cosine 0.5
    monkeypatch.setitem(OPERATING_POINTS, "colour", OperatingPoint("cosine", 0.5, "test"))
    root = _colour_folder(tmp_path / "photos")
    fake = FakeProtect()
    config = EvalConfig(root=root, gallery=1, transforms=("none", "half+jpeg75"), device="cpu",
                        cache_dir=tmp_path / "cache")
    results = run_evaluation(config, protect_fn=fake, observers=[FakeObserver()], quiet=True)
    assert fake.calls == 4
    assert results["dataset"] == {"identities": 4, "subjects": 4, "gallery_photos": 4,
                                  "protected_gallery_photos": 4, "probes": 8}
    rows = {r["transform"]: r for r in results["results"]}
    for row in rows.values():
        assert row["rank1_clean"] == 1.0 and row["rank5_clean"] == 1.0
        # inverted colours: the own gallery is the farthest of all (rank 4, still inside rank 5);
        # dee's protected photo is black, no face found: dee's probes miss even at rank 5
        assert row["rank1_protected"] == 0.0
        assert row["rank5_protected"] == 0.75
        assert row["probes_own_gallery_gone"] == 0.25
        assert row["gallery_undetected_protected"] == 0.25 and row["gallery_undetected_clean"] == 0.0
        assert row["role"] == "held-out" and row["probes"] == 8
        # 8 probes x their identity's 1 gallery photo; inverted colours point the other way
        assert row["pairs"] == 8 and row["pair_match_clean"] == 1.0 and row["pair_match_protected"] == 0.0
    assert results["quality"]["fast"]["face_psnr"]["mean"] < 20
    # a second run: every protected photo from the cache, the same numbers
    again = run_evaluation(config, protect_fn=fake, observers=[FakeObserver()], quiet=True)
    assert fake.calls == 4 and (again["cache"]["hits"], again["cache"]["misses"]) == (4, 0)
    assert again["results"] == results["results"]

    paths = write_report(results, tmp_path / "out")
    saved = json.loads(paths["json"].read_text())
    assert saved["results"][0]["rank1_protected"] == 0.0
    assert "| colour | held-out | fast | none | 8 | 100 % → **0 %**" in paths["markdown"].read_text()
    for key in ("plot", "contact_sheet"):
        with Image.open(paths[key]) as image:
            assert image.format == "PNG" and min(image.size) > 100


class CountingObserver(FakeObserver):
    """FakeObserver that counts the photos it looks at and has a signature (disk-cacheable)."""

    signature = "mean-colour v1"

    def __init__(self):
        self.looked_at = 0

    def observe(self, data):
        self.looked_at += 1
        return super().observe(data)


def test_observations_are_cached_on_disk_for_the_next_run(tmp_path):
    root = _colour_folder(tmp_path / "photos")
    config = EvalConfig(root=root, gallery=1, transforms=("none", "half"), device="cpu", cache_dir=tmp_path / "cache")
    first_observer, second_observer = CountingObserver(), CountingObserver()
    first = run_evaluation(config, protect_fn=FakeProtect(), observers=[first_observer], quiet=True)
    second = run_evaluation(config, protect_fn=FakeProtect(), observers=[second_observer], quiet=True)
    # 8 probes + 4 gallery photos x 2 transforms x (clean, protected), identical bytes looked at once
    assert first_observer.looked_at == first["cache"]["observations"]["computed_now"] > 8
    assert second_observer.looked_at == 0
    assert second["cache"]["observations"]["from_disk"] == first_observer.looked_at
    assert second["results"] == first["results"]


def test_leave_one_out_runs_every_ensemble_and_reports_the_others_as_held_out():
    assert leave_one_out(("a", "b", "c")) == (("b", "c"), ("a", "c"), ("a", "b"))
    with pytest.raises(ValueError):
        leave_one_out(("a",))
    config = EvalConfig(root=".", presets=("fast",), recognizers=("dlib-resnet",),
                        ensembles=leave_one_out(("mfn-expo", "mfn-faceplugin")))
    runs = config.settings()
    assert list(runs) == ["fast [mfn-faceplugin]", "fast [mfn-expo]"]
    assert runs["fast [mfn-expo]"].ensemble == ("mfn-expo",)
    assert config.recognizers_to_observe() == ("dlib-resnet", "mfn-faceplugin", "mfn-expo")
    from lowkey_engine.evaluation.protocol import role_of
    assert role_of("mfn-faceplugin", runs["fast [mfn-expo]"]) == "held-out"
    assert role_of("mfn-expo", runs["fast [mfn-expo]"]) == "attacked"


def test_every_fetched_recognizer_has_an_operating_point_in_its_own_comparison():
    from lowkey_engine.faces.recognizers import SPECS
    from lowkey_weights.manifest import load_manifest

    fetched_by_default = {e.id for e in load_manifest().values() if e.default and e.role == "recognizer"}
    for model_id in fetched_by_default:
        assert OPERATING_POINTS[model_id].metric == SPECS[model_id].comparison, model_id


def test_operating_points_decide_on_cosine_or_distance():
    cosine = OperatingPoint("cosine", 0.5, "test")
    assert cosine.matches(torch.tensor([0.49, 0.5, float("-inf")])).tolist() == [False, True, False]
    # similarity_scores gives minus the distance for Euclidean recognizers (dlib: < 0.6 matches)
    euclidean = OPERATING_POINTS["dlib-real"]
    assert euclidean.matches(torch.tensor([-0.59, -0.6, float("-inf")])).tolist() == [True, False, False]


def test_protect_limit_keeps_the_other_identities_as_clean_distractors(tmp_path):
    root = _colour_folder(tmp_path / "photos")
    fake = FakeProtect()
    config = EvalConfig(root=root, gallery=1, protect_limit=2, transforms=("none",), device="cpu", cache_dir=None)
    results = run_evaluation(config, protect_fn=fake, observers=[FakeObserver()], quiet=True)
    assert fake.calls == 2                                   # only ann's and bob's gallery photos
    assert results["dataset"] == {"identities": 4, "subjects": 2, "gallery_photos": 4,
                                  "protected_gallery_photos": 2, "probes": 4}
    row, = results["results"]
    assert row["probes"] == 4 and row["rank1_clean"] == 1.0
    # ann's and bob's inverted galleries are the farthest of the four: rank 4 of 4
    assert row["rank1_protected"] == 0.0 and row["rank5_protected"] == 1.0
    assert row["gallery_undetected_protected"] == 0.0
    assert results["quality"]["fast"]["photos"] == 2
    report = write_report(results, tmp_path / "out")["markdown"].read_text()
    assert "those of the first 2 identities protected" in report


# --- end to end, real models ----------------------------------------------------------------------

@pytest.mark.slow
def test_lowkey_eval_end_to_end(tmp_path, faces_dir):
    from lowkey_engine.cli import main
    from lowkey_engine.faces.paths import converted_path

    from lowkey_engine.settings import ProtectSettings

    attacked = set(ProtectSettings.from_preset("fast").ensemble)
    if not all(converted_path(m).is_file() for m in {"mtcnn", "dlib-resnet", *attacked}):
        pytest.skip("models not fetched (lowkey weights fetch)")
    source = faces_dir / "lfw-dev"
    for identity in sorted(p.name for p in source.iterdir())[:3]:
        (tmp_path / "photos" / identity).mkdir(parents=True)
        for photo in sorted((source / identity).iterdir())[:3]:
            shutil.copy(photo, tmp_path / "photos" / identity)
    try:
        import dlib  # noqa: F401
        real_dlib = ["--real-dlib"]
    except ImportError:
        real_dlib = []
    out = tmp_path / "out"
    status = main(["eval", str(tmp_path / "photos"), "--preset", "fast", "--gallery", "1",
                   "--set", "steps=1", "--set", "working_face_px=64", "--transforms", "none", "half+jpeg75",
                   "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--device", "cpu", "-q", *real_dlib])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["fast"]["steps"] == 1 and results["dataset"]["identities"] == 3
    expected = attacked | {"dlib-resnet"} | ({"dlib-real"} if real_dlib else set())
    assert {r["recognizer"] for r in results["results"]} == expected
    assert len(results["results"]) == 2 * len(expected)
    for row in results["results"]:
        assert row["probes"] >= 5
        for key in ("rank1_clean", "rank1_protected", "rank5_clean", "rank5_protected",
                    "gallery_undetected_protected", "probes_own_gallery_gone"):
            assert 0.0 <= row[key] <= 1.0
        if row["detector"] == "mtcnn":           # (dlib's HOG detector misses some LFW faces)
            assert row["rank5_clean"] == 1.0     # three identities, all found: always within rank 5
    quality = results["quality"]["fast"]
    assert 25 < quality["photo_psnr"]["mean"] < 80 and 0.8 < quality["face_ssim"]["min"] <= 1.0
    assert "| mfn-expo | attacked | fast | none |" in (out / "results.md").read_text()
    for name in ("accuracy.png", "contact-sheet.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"


def test_ciede2000_matches_sharma_test_data():
    from lowkey_engine.attack.colour import ciede2000, srgb_to_lab

    # pairs 1, 7, 11, 13, 17, 25 of Sharma, Wu and Dalal (2005), with their published ΔE00
    lab1 = torch.tensor([[50, 2.6772, -79.7751], [50, 0, 0], [50, -0.001, 2.49], [50, 2.49, -0.001],
                         [50, 2.5, 0], [60.2574, -34.0099, 36.2677]])
    lab2 = torch.tensor([[50, 0, -82.7485], [50, -1, 2], [50, 0.0009, -2.49], [50, -2.49, 0.0009],
                         [73, 25, -18], [60.4626, -34.1751, 39.4387]])
    expected = [2.0425, 2.3669, 4.8045, 7.1792, 27.1492, 1.2644]
    assert ciede2000(lab1, lab2).tolist() == pytest.approx(expected, abs=1e-4)
    white = srgb_to_lab(torch.ones(1, 3, 1, 1)).flatten().tolist()
    assert white == pytest.approx([100, 0, 0], abs=1e-3)
