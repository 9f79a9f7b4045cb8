"""Where each recognizer decides "same person": its operating point, for the pair-match rate.

A face search does not only rank: a deployed system also answers yes or no for a pair of photos.
`lowkey eval` reports the pair-match rate, the share of (protected gallery photo, clean probe of
the same person) pairs a recognizer still calls the same person at its operating point.

- dlib (real, and our port of its model) at dlib's own documented threshold: Euclidean distance
  between its raw 128-D descriptors below 0.6. The port's raw descriptors have the scale of real
  dlib's (norms 1.31-1.51 against 1.32-1.48 on the same ten lfw-dev photos).
- Every other recognizer at the cosine similarity where 1 in 1,000 different-person pairs of clean
  lfw-dev photos match (false-match rate 1e-3), measured once with
  `.venv/bin/python benchmarks/operating_points.py` and written here with what it printed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .observers import REAL_DLIB_ID

#: dlib's documented same-person threshold on the Euclidean distance between descriptors.
DLIB_EUCLIDEAN_THRESHOLD = 0.6
#: False-match rate at which the cosine recognizers' thresholds are set.
CALIBRATION_FALSE_MATCH_RATE = 1e-3


@dataclass(frozen=True)
class OperatingPoint:
    """Same person when cosine >= `threshold` (metric "cosine", unit embeddings) or when the
    Euclidean distance < `threshold` (metric "euclidean")."""

    metric: str
    threshold: float
    source: str

    def matches(self, scores: Tensor) -> Tensor:
        """Same-person decisions for `metrics.similarity_scores` output of this metric (cosine,
        or minus the distance); -inf (no face found) never matches."""
        if self.metric == "cosine":
            return scores >= self.threshold
        if self.metric == "euclidean":
            return scores > -self.threshold
        raise ValueError(f"unknown metric {self.metric!r}")


_DLIB = f"dlib's documented threshold: Euclidean distance < {DLIB_EUCLIDEAN_THRESHOLD} between raw descriptors"
_CALIBRATED = ("cosine at false-match rate 1e-3 on clean lfw-dev different-person pairs "
               "(benchmarks/operating_points.py, 2026-11-30)")

#: What benchmarks/operating_points.py printed on lfw-dev (1275 photos, 212 identities, 808,677
#: different-person and 3,498 same-person pairs): the threshold, and the share of same-person pairs
#: that match there. dlib-resnet at its 0.6 matched 1 in 131 different-person pairs and 0.985 of
#: the same-person ones.
OPERATING_POINTS: dict[str, OperatingPoint] = {
    REAL_DLIB_ID: OperatingPoint("euclidean", DLIB_EUCLIDEAN_THRESHOLD, _DLIB),
    "dlib-resnet": OperatingPoint("euclidean", DLIB_EUCLIDEAN_THRESHOLD, _DLIB),
    "mfn-faceplugin": OperatingPoint("cosine", 0.3422, _CALIBRATED),      # same-person pairs matched: 0.989
    "mfn-expo": OperatingPoint("cosine", 0.4596, _CALIBRATED),            # 0.979
    "face-reid-0095": OperatingPoint("cosine", 0.3550, _CALIBRATED),      # 0.989
    "mfn-casia": OperatingPoint("cosine", 0.4363, _CALIBRATED),           # 0.911
    "edgeface-xs": OperatingPoint("cosine", 0.2667, _CALIBRATED),         # 0.995
    "hse-faceres": OperatingPoint("cosine", 0.6140, _CALIBRATED),         # 0.873
    "hse-faceres-deep": OperatingPoint("cosine", 0.7603, _CALIBRATED),    # 0.495
}


def operating_point(recognizer_id: str) -> OperatingPoint | None:
    """The recognizer's operating point; None when none has been measured for it."""
    return OPERATING_POINTS.get(recognizer_id)


def pair_match_rate(scores: Tensor, same_person: Tensor, point: OperatingPoint) -> float:
    """Share of the same-person pairs (`same_person` True in the (P, G) grid of `scores`) that
    the recognizer calls the same person at `point`; nan when there are none."""
    if not bool(same_person.any()):
        return float("nan")
    return float(point.matches(torch.as_tensor(scores))[same_person].double().mean())
