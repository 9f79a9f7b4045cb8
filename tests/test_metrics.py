"""Metric code on tiny cases whose answers are known by hand."""

import pytest

from lowkey_engine.evaluation.metrics import roc_auc, verification_pairs


def test_auc_perfect_chance_and_inverted():
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5


def test_auc_counts_pairs_by_hand():
    # positives 0.8, 0.4; negatives 0.6, 0.2: pairs (0.8>0.6)(0.8>0.2)(0.4<0.6)(0.4>0.2) -> 3/4
    assert roc_auc([0.8, 0.4, 0.6, 0.2], [True, True, False, False]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts half: (1 + 0.5) / 2
    assert roc_auc([0.7, 0.5, 0.5], [True, True, False]) == pytest.approx(0.75)


def test_auc_needs_both_labels():
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [True, True])


def test_pairs_are_labelled_correctly_and_repeatable():
    ids = ["a", "a", "a", "b", "b", "c"]
    pairs, labels = verification_pairs(ids, n_same=10, n_different=5, seed=3)
    assert sum(labels) == 4                     # all same pairs: 3 for a, 1 for b
    assert len(pairs) - sum(labels) == 5
    for (i, j), same in zip(pairs, labels):
        assert i != j and (ids[i] == ids[j]) == same
    assert len(set(pairs)) == len(pairs)
    assert verification_pairs(ids, 10, 5, seed=3) == (pairs, labels)
