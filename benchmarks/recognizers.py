"""Recognizer zoo benchmark: load time, CPU/CUDA forward+backward per face, LFW verification AUC.

    .venv/bin/python benchmarks/recognizers.py [--device cpu] [--faces-dir data/faces]
        [--models ID ...] [--identities 150] [--out PATH]

Prints a Markdown table (the one in README.md) and writes benchmarks/results/recognizers-<device>.json
(or --out). Every fetched recognizer unless --models names some; --identities shrinks the LFW set for
a quick check that the script runs (its AUCs and timings are then not the README's).
Run by hand on a quiet machine; never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from lowkey_engine.evaluation.datasets import detect_subjects, labelled_photos
from lowkey_engine.faces.detect import load_detector
from lowkey_engine.evaluation.metrics import verification_auc
from lowkey_engine.faces.recognizers import DEFAULT_ENSEMBLE, SPECS, load_recognizer
from lowkey_weights.fetch import is_fetched
from lowkey_weights.manifest import load_manifest
from lowkey_weights.datasets import faces_dir

HERE = Path(__file__).resolve().parent
TIMING_BATCH = 8
TIMING_REPEATS = 5
PAIRS_PER_LABEL = 600
LFW_IDENTITIES = 150
LFW_PHOTOS_PER_IDENTITY = 4


def fetchable_recognizers() -> list[str]:
    manifest = load_manifest()
    return [m for m in SPECS if m in manifest and is_fetched(manifest[m])]


def time_load(device: str, model_ids: list[str]) -> float:
    """Seconds to load the detector and `model_ids` from disk (modules already imported)."""
    started = time.perf_counter()
    load_detector(device)
    for model_id in model_ids:
        load_recognizer(model_id, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def time_forward_backward(model_id: str, device: str, faces) -> float:
    """Seconds per face for embed (align + network) forward and backward, batch TIMING_BATCH."""
    recognizer = load_recognizer(model_id, device)
    images, landmarks = next(faces.batches(TIMING_BATCH))
    images, landmarks = images.to(device), landmarks.to(device)
    timings = []
    for _ in range(TIMING_REPEATS + 1):
        x = images.clone().requires_grad_(True)
        started = time.perf_counter()
        recognizer.embed(x, landmarks).sum().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    return sorted(timings[1:])[len(timings[1:]) // 2] / len(images)


def lfw_auc(model_id: str, device: str, faces) -> float:
    recognizer = load_recognizer(model_id, device)
    with torch.no_grad():
        embeddings = torch.cat([recognizer.embed(x.to(device), marks.to(device)).cpu()
                                for x, marks in faces.batches(32)])
    return verification_auc(embeddings, faces.identities, PAIRS_PER_LABEL, seed=0)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--faces-dir", default=str(faces_dir()))
    parser.add_argument("--models", nargs="+", metavar="ID", help="recognizers to measure (default: every fetched one)")
    parser.add_argument("--identities", type=int, default=LFW_IDENTITIES, help="LFW identities (4 photos each)")
    parser.add_argument("--out", type=Path, help="where the JSON goes (default: benchmarks/results/)")
    args = parser.parse_args()
    model_ids = args.models or fetchable_recognizers()
    unknown = sorted(set(model_ids) - set(SPECS))
    if unknown:
        parser.error(f"unknown recognizer(s) {unknown}; known: {', '.join(SPECS)}")

    engine_load_seconds = time_load(args.device, list(DEFAULT_ENSEMBLE))
    all_load_seconds = engine_load_seconds + time_load(args.device, model_ids)
    photos = labelled_photos(Path(args.faces_dir) / "lfw-dev", min_per_identity=LFW_PHOTOS_PER_IDENTITY,
                             max_per_identity=LFW_PHOTOS_PER_IDENTITY, max_identities=args.identities)
    faces = detect_subjects(photos, load_detector(args.device))
    rows = []
    for model_id in model_ids:
        rows.append({"model": model_id, "auc": lfw_auc(model_id, args.device, faces),
                     "fwd_bwd_ms_per_face": 1000 * time_forward_backward(model_id, args.device, faces),
                     "held_out": SPECS[model_id].held_out,
                     "default_ensemble": model_id in DEFAULT_ENSEMBLE})
    machine = {"device": args.device, "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
               "processor": platform.processor() or platform.machine()}
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name()
    result = {"machine": machine, "load_seconds_detector_and_ensemble": engine_load_seconds,
              "load_seconds_all_models": all_load_seconds,
              "lfw_photos": len(faces.identities), "lfw_missed": faces.missed, "models": rows}
    out = args.out or HERE / "results" / f"recognizers-{args.device.replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(f"Loading detector + attack ensemble: {engine_load_seconds:.2f} s; every fetched model: "
          f"{all_load_seconds:.2f} s ({args.device})")
    print(f"LFW: {len(faces.identities)} photos, {len(set(faces.identities))} identities, "
          f"{PAIRS_PER_LABEL} same + {PAIRS_PER_LABEL} different pairs\n")
    print("| model | role | LFW ROC AUC | fwd+bwd per face (ms) |")
    print("|---|---|---|---|")
    for row in rows:
        role = "held out" if row["held_out"] else ("attacked (default)" if row["default_ensemble"] else "available")
        print(f"| `{row['model']}` | {role} | {row['auc']:.4f} | {row['fwd_bwd_ms_per_face']:.0f} |")


if __name__ == "__main__":
    main()
