"""Each recognizer's operating point: the cosine at which 1 in 1,000 different-person pairs of clean
photos match (false-match rate 1e-3), and how many same-person pairs still match there.

    .venv/bin/python benchmarks/operating_points.py [--folder data/faces/lfw-dev]
        [--recognizers ID ...]

Every photo of the folder (`<identity>/<photos>`), the central face found by our MTCNN, embedded by
every fetched recognizer (or those --recognizers names: a new model's threshold, without
re-embedding every other model) as `lowkey eval` embeds it (observations are cached where `lowkey eval`
caches them); all different-identity pairs and all same-identity pairs. For recognizers compared by
Euclidean distance (dlib) it reports the false- and true-match rates at dlib's own threshold
instead. Prints a table and the lines for `lowkey_engine/evaluation/operating_points.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path

import torch

from lowkey_engine.evaluation.cache import ObservationCache
from lowkey_engine.evaluation.cli import default_cache_dir
from lowkey_engine.evaluation.datasets import labelled_photos
from lowkey_engine.evaluation.metrics import similarity_scores
from lowkey_engine.evaluation.observers import MtcnnObserver
from lowkey_engine.evaluation.operating_points import CALIBRATION_FALSE_MATCH_RATE, DLIB_EUCLIDEAN_THRESHOLD
from lowkey_engine.faces.paths import converted_path
from lowkey_engine.faces.recognizers import SPECS
from lowkey_weights.datasets import faces_dir

HERE = Path(__file__).resolve().parent
BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=str(faces_dir() / "lfw-dev"))
    parser.add_argument("--false-match-rate", type=float, default=CALIBRATION_FALSE_MATCH_RATE)
    parser.add_argument("--recognizers", nargs="+", metavar="ID", help="default: every fetched one")
    args = parser.parse_args()

    recognizers = [r for r in SPECS if converted_path(r).is_file()
                   and (not args.recognizers or r in args.recognizers)]
    missing = sorted(set(args.recognizers or ()) - set(recognizers))
    if missing:
        parser.error(f"not fetched or unknown: {', '.join(missing)}")
    photos = labelled_photos(args.folder, min_per_identity=2)
    observer = MtcnnObserver(recognizers)
    cache = ObservationCache(default_cache_dir() / "observations", [observer])
    keyed = [(hashlib.sha256(p.path.read_bytes()).hexdigest(), p) for p in photos]
    todo = [(key, p.path.read_bytes()) for key, p in keyed if key not in cache]
    for start in range(0, len(todo), BATCH):
        cache.observe(todo[start:start + BATCH])
        print(f"embedded {min(start + BATCH, len(todo))}/{len(todo)} photos", flush=True)
    views = [cache[key] for key, _ in keyed]
    identities = [p.identity for _, p in keyed]

    print(f"\n{args.folder}: {len(photos)} photos of {len(set(identities))} identities\n")
    print("| recognizer | compared by | photos with a face | different-person pairs | threshold | "
          "false-match rate | same-person pairs matched |")
    print("|---|---|---|---|---|---|---|")
    lines = []
    for info in observer.recognizers:
        found = [i for i, v in enumerate(views) if info.id in v]
        embeddings = torch.stack([views[i][info.id] for i in found])
        labels = torch.tensor([hash(identities[i]) for i in found])
        scores = similarity_scores(embeddings, embeddings, metric=info.metric)
        upper = torch.triu(torch.ones_like(scores, dtype=torch.bool), diagonal=1)
        same = upper & (labels[:, None] == labels[None, :])
        different = upper & (labels[:, None] != labels[None, :])
        if info.metric == "euclidean":
            threshold = DLIB_EUCLIDEAN_THRESHOLD
            matched = scores > -threshold
        else:
            ranked = scores[different].sort(descending=True).values
            allowed = math.floor(args.false_match_rate * len(ranked))
            threshold = float(ranked[allowed]) + 1e-6      # just above the (allowed+1)-th best
            matched = scores >= threshold
        false_match = float(matched[different].double().mean())
        true_match = float(matched[same].double().mean())
        print(f"| `{info.id}` | {info.metric} | {len(found)}/{len(views)} | {int(different.sum())} | "
              f"{'<' if info.metric == 'euclidean' else '≥'} {threshold:.4f} | {false_match:.5f} | "
              f"{true_match:.3f} of {int(same.sum())} |")
        if info.metric == "cosine":
            lines.append(f'    "{info.id}": OperatingPoint("cosine", {threshold:.4f}, _CALIBRATED),')
    print("\nFor lowkey_engine/evaluation/operating_points.py:\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
