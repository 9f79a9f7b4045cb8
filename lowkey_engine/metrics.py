"""Evaluation metrics on embeddings: verification ROC AUC and pair construction.

Embeddings are unit vectors (N, D); similarity is cosine (dot product).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor


def roc_auc(scores: Sequence[float] | Tensor, labels: Sequence[bool] | Tensor) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count half). 1.0 = perfect separation, 0.5 = chance."""
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    labels = torch.as_tensor(labels, dtype=torch.bool).flatten()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs at least one positive and one negative")
    # Mann-Whitney U with average ranks for ties.
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    unique, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    average_rank = ends - (counts.to(torch.float64) - 1) / 2
    ranks[order] = average_rank[inverse]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def verification_pairs(identities: Sequence[str], n_same: int, n_different: int,
                       seed: int = 0) -> tuple[list[tuple[int, int]], list[bool]]:
    """Index pairs (i, j), i != j, into a list of samples labelled by `identities`, with a label
    True for the same identity. Draws up to `n_same` distinct same-identity pairs (all of them if
    fewer exist) and `n_different` distinct different-identity pairs; deterministic for a seed."""
    rng = random.Random(seed)
    by_identity: dict[str, list[int]] = {}
    for index, identity in enumerate(identities):
        by_identity.setdefault(identity, []).append(index)
    same = [(a, b) for members in by_identity.values()
            for k, a in enumerate(members) for b in members[k + 1:]]
    rng.shuffle(same)
    same = same[:n_same]
    different: set[tuple[int, int]] = set()
    if len(by_identity) < 2:
        raise ValueError("different-identity pairs need at least two identities")
    while len(different) < n_different:
        a, b = rng.sample(range(len(identities)), 2)
        if identities[a] != identities[b]:
            different.add((min(a, b), max(a, b)))
    pairs = same + sorted(different)
    return pairs, [True] * len(same) + [False] * len(different)
