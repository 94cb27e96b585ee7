"""Full-ranking evaluator: hand-computed ranks (ties against the model), padding, masking, metrics, batching."""

import math

import numpy as np
import pytest
import torch

from ml.evaluate.ranking import evaluate_model, evaluate_protocols, ranking_metrics, ranks_from_scores


def test_ties_count_against_the_model() -> None:
    # Column 0 is padding. Row 0: target 2 (0.5) tied with items 1 and 4 -> rank 3.
    # Row 1: target 3 strictly best -> rank 1. Row 2: target 1 below 2 and 3, tied with 4 -> rank 4.
    scores = np.array([
        [0.0, 0.5, 0.5, 0.1, 0.5],
        [0.0, 0.2, 0.3, 0.9, 0.1],
        [0.0, 0.1, 0.7, 0.8, 0.1],
    ])
    assert ranks_from_scores(scores, [2, 3, 1]).tolist() == [3, 1, 4]


def test_constant_scores_rank_the_target_last() -> None:
    assert ranks_from_scores(torch.ones(2, 6), torch.tensor([1, 5])).tolist() == [5, 5]


def test_padding_column_is_never_ranked() -> None:
    scores = torch.tensor([[100.0, 0.2, 0.9, 0.1]])
    assert ranks_from_scores(scores, [2]).tolist() == [1]


def test_masking_excludes_history_items_but_never_the_target() -> None:
    scores = np.array([[0.0, 0.9, 0.8, 0.5, 0.7, 0.1]])
    assert ranks_from_scores(scores, [3]).tolist() == [4]  # items 1, 2, 4 score higher
    # Items 1 and 4 were seen; target 3 also in the history (a repeat) stays rankable.
    assert ranks_from_scores(scores, [3], exclude=[np.array([1, 4, 3])]).tolist() == [2]
    assert ranks_from_scores(scores, [3], exclude=[np.array([], dtype=np.int64)]).tolist() == [4]


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="item indices"):
        ranks_from_scores(np.ones((1, 4)), [0])
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(np.array([[0.0, np.nan, 1.0]]), [2])
    with pytest.raises(ValueError, match="one target per row"):
        ranks_from_scores(np.ones((2, 4)), [1])


def test_metrics_by_hand() -> None:
    metrics = ranking_metrics(np.array([1, 3, 11]), ks=(5, 10))
    assert metrics["recall@5"] == pytest.approx(2 / 3)
    assert metrics["recall@10"] == pytest.approx(2 / 3)
    assert metrics["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(4)) / 3)
    assert metrics["ndcg@10"] == pytest.approx(0.5)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 3)
    assert ranking_metrics(np.array([12]), ks=(10,)) == {"recall@10": 0.0, "ndcg@10": 0.0, "mrr": pytest.approx(1 / 12)}


def test_evaluate_model_batches_and_keeps_user_order() -> None:
    rng = np.random.default_rng(0)
    n_items = 20
    # Distinct first items, so a history's first item identifies its user.
    histories = [np.r_[user + 1, rng.integers(1, n_items + 1, size=length - 1)] for user, length in enumerate((5, 1, 3, 8, 2, 1, 4))]
    targets = rng.integers(1, n_items + 1, size=len(histories))
    table = torch.from_numpy(rng.normal(size=(len(histories), n_items + 1)))
    # The score of a user depends on its history only (here: a fixed row picked by the history's first item).
    by_first = {int(h[0]): i for i, h in enumerate(histories)}
    seen_batches: list[int] = []

    def score_fn(batch: list[np.ndarray]) -> torch.Tensor:
        seen_batches.append(len(batch))
        return table[[by_first[int(h[0])] for h in batch]]

    expected = ranks_from_scores(table[[by_first[int(h[0])] for h in histories]], targets)
    result = evaluate_model(score_fn, histories, targets, batch_size=3)
    assert result.ranks.tolist() == expected.tolist()
    assert seen_batches == [3, 3, 1]
    assert result.metrics == ranking_metrics(expected)
    masked = evaluate_model(score_fn, histories, targets, batch_size=2, mask_history=True)
    assert (masked.ranks <= result.ranks).all()
    assert masked.ranks.tolist() == ranks_from_scores(table[[by_first[int(h[0])] for h in histories]], targets, histories).tolist()


def test_both_protocols_come_from_one_scoring_pass() -> None:
    # Two users; user 0 has seen item 1 (its top score), user 1 has seen items 2 and 4.
    table = torch.tensor([[0.0, 0.9, 0.2, 0.5, 0.7], [0.0, 0.1, 0.8, 0.3, 0.6]])
    histories = [np.array([1]), np.array([2, 4])]
    calls: list[int] = []

    def score_fn(batch: list[np.ndarray]) -> torch.Tensor:
        calls.append(len(batch))
        return table[[0 if len(h) == 1 else 1 for h in batch]]

    both = evaluate_protocols(score_fn, histories, np.array([3, 3]))
    assert calls == [2]
    # Unmasked: user 0's item 3 (0.5) is below items 1 and 4 -> rank 3; user 1's (0.3) below 2 and 4 -> 3.
    assert both[False].ranks.tolist() == [3, 3]
    # Masked: the seen items drop out -> user 0 rank 2 (item 4 is still above), user 1 rank 1.
    assert both[True].ranks.tolist() == [2, 1]
    assert evaluate_model(score_fn, histories, np.array([3, 3]), mask_history=True).metrics == both[True].metrics
    assert set(evaluate_protocols(score_fn, histories, np.array([3, 3]), protocols=(True,))) == {True}
    with pytest.raises(ValueError, match="protocol"):
        evaluate_protocols(score_fn, histories, np.array([3, 3]), protocols=())
