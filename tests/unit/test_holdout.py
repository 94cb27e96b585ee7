"""The random-holdout protocol (ml/evaluate/holdout.py): the split's ratios and disjointness, metrics by hand."""

import math

import numpy as np
import pytest
import torch

from ml.evaluate.holdout import holdout_metrics, random_holdout


def test_the_split_keeps_every_distinct_pair_once_in_the_ratio() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 3000), rng.integers(1, 60, 3000)
    split = random_holdout(users, items, 40, (3, 1, 1), seed=7)
    distinct = {(u, i) for u, i in zip(users.tolist(), items.tolist(), strict=True)}
    parts = [{(u, int(i)) for u, row in enumerate(part) for i in row} for part in (split.train, split.valid, split.test)]
    assert set.union(*parts) == distinct and sum(map(len, parts)) == len(distinct)  # disjoint, nothing lost
    assert [round(len(part) / len(distinct), 2) for part in parts] == [0.6, 0.2, 0.2]
    again = random_holdout(users, items, 40, (3, 1, 1), seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(split.test, again.test, strict=True))  # seeded
    other = random_holdout(users, items, 40, (3, 1, 1), seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(split.test, other.test, strict=True))


def test_metrics_match_a_hand_computation() -> None:
    """User 0 ranks items 3, 2, 1, 4 with 3 removed: targets {2, 4} sit at ranks 1 and 3; user 1 has none."""
    scores = torch.tensor([[0.0, 2.0, 3.0, 9.0, 1.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    metrics = holdout_metrics(lambda rows: scores[torch.from_numpy(rows)], [np.array([3]), np.array([])],
                              [np.array([2, 4]), np.array([], dtype=np.int64)], ks=(1, 3))
    assert metrics["recall@1"] == pytest.approx(0.5)
    assert metrics["recall@3"] == pytest.approx(1.0)
    assert metrics["ndcg@1"] == pytest.approx(1.0)
    assert metrics["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_no_held_out_item_fails_clearly() -> None:
    with pytest.raises(ValueError, match="no user has a held-out item"):
        holdout_metrics(lambda rows: torch.zeros(len(rows), 3), [np.array([1])], [np.array([], dtype=np.int64)])
