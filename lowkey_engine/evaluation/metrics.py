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


def verification_auc(embeddings: Tensor, identities: Sequence[str], pairs_per_label: int,
                     seed: int = 0) -> tuple[float, int, int]:
    """1:1 verification ROC AUC of unit embeddings (N, D) labelled by `identities`, over up to
    `pairs_per_label` same-identity and exactly that many different-identity pairs, scored by
    cosine. Returns (AUC, same-identity pairs used, different-identity pairs used)."""
    pairs, labels = verification_pairs(identities, pairs_per_label, pairs_per_label, seed=seed)
    index = torch.tensor(pairs)
    scores = (embeddings[index[:, 0]] * embeddings[index[:, 1]]).sum(1)
    same = sum(labels)
    return roc_auc(scores, labels), same, len(labels) - same


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


# --- identification (gallery / probe) -------------------------------------------------------------

def identity_ranks(scores: Tensor, gallery_identities: Sequence[int] | Tensor,
                   probe_identities: Sequence[int] | Tensor) -> Tensor:
    """Rank (1 = first) of each probe's true identity in an identification search.

    `scores` (P, G): similarity of probe i to gallery photo j, higher = more alike; -inf marks a
    gallery photo that is not there for that probe (e.g. its face was not found). Identities are
    ordered by their best-scoring gallery photo (the nearest gallery photo decides); ties count
    against the true identity. Returns float ranks (P,); inf where the true identity has no
    gallery photo left."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    gallery = torch.as_tensor(gallery_identities, dtype=torch.long)
    probes = torch.as_tensor(probe_identities, dtype=torch.long)
    if scores.shape != (len(probes), len(gallery)):
        raise ValueError(f"scores {tuple(scores.shape)} do not match {len(probes)} probes x "
                         f"{len(gallery)} gallery photos")
    labels = torch.unique(gallery)
    # best[i, k]: the best score of identity labels[k] for probe i
    best = torch.full((len(probes), len(labels)), float("-inf"), dtype=torch.float64)
    for k, label in enumerate(labels):
        columns = scores[:, gallery == label]
        if columns.shape[1]:
            best[:, k] = columns.max(1).values
    ranks = torch.full((len(probes),), float("inf"), dtype=torch.float64)
    for i, label in enumerate(probes):
        own = (labels == label).nonzero()
        if len(own) == 0:
            continue
        own_score = best[i, int(own[0])]
        if own_score == float("-inf"):
            continue
        others = torch.cat([best[i, :int(own[0])], best[i, int(own[0]) + 1:]])
        ranks[i] = 1 + int((others >= own_score).sum())
    return ranks


def rank_k_accuracy(ranks: Tensor, k: int) -> float:
    """Share of probes whose true identity is among the first `k` (nan when there are none)."""
    ranks = torch.as_tensor(ranks, dtype=torch.float64)
    if len(ranks) == 0:
        return float("nan")
    return float((ranks <= k).double().mean())


def own_gallery_swapped(clean_scores: Tensor, protected_scores: Tensor,
                        gallery_identities: Sequence[int] | Tensor,
                        probe_identities: Sequence[int] | Tensor) -> Tensor:
    """The LowKey identification setting: each probe meets its OWN identity's gallery photos
    protected and every other identity's gallery clean. Both inputs (P, G) score the same probes
    against the same gallery photos, clean and protected; the result takes column j from
    `protected_scores` where gallery photo j is the probe's identity, else from `clean_scores`."""
    gallery = torch.as_tensor(gallery_identities, dtype=torch.long)
    probes = torch.as_tensor(probe_identities, dtype=torch.long)
    own = probes[:, None] == gallery[None, :]
    return torch.where(own, torch.as_tensor(protected_scores), torch.as_tensor(clean_scores))


def similarity_scores(probes: Tensor, gallery: Tensor, gallery_present: Tensor | None = None,
                      metric: str = "cosine") -> Tensor:
    """(P, G) similarities between probe and gallery embeddings: dot products of unit vectors
    ("cosine") or negative Euclidean distances ("euclidean", as dlib compares descriptors).
    Gallery rows where `gallery_present` is False score -inf."""
    probes, gallery = probes.double(), gallery.double()
    if metric == "cosine":
        scores = probes @ gallery.T
    elif metric == "euclidean":
        scores = -torch.cdist(probes, gallery)
    else:
        raise ValueError(f"unknown similarity metric {metric!r}")
    if gallery_present is not None:
        scores = scores.masked_fill(~torch.as_tensor(gallery_present, dtype=torch.bool)[None, :], float("-inf"))
    return scores
