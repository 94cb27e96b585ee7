"""The random-holdout protocol of the graph-CF papers (RLMRec's 3:1:1), next to our leave-one-out one.

Every distinct (user, item) interaction goes to train, validation or test at random in the given
ratio (RLMRec: 3:1:1), so a user has any number of held-out items, and ranking is over all items with
the items of the user's earlier parts removed (validation: train; test: train and validation).
Metrics per user with at least one held-out item, averaged over those users, as the papers' code:
Recall@k = hits in the top k / the user's held-out items; NDCG@k = DCG@k / the ideal DCG of
min(k, held-out items) hits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ml.evaluate.ranking import DEFAULT_KS

# user rows -> (batch, n_items + 1) scores, column 0 padding
RowScoreFn = Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class HoldoutSplit:
    """Per-user item-index arrays of each part; row u is user u of the source split."""

    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]


def random_holdout(users: np.ndarray, items: np.ndarray, n_users: int, ratios: Sequence[int] = (3, 1, 1),
                   seed: int = 0) -> HoldoutSplit:
    """Split the distinct (user, item) pairs at random into train / valid / test in `ratios` (seeded)."""
    pairs = np.unique(np.stack([np.asarray(users, np.int64), np.asarray(items, np.int64)], axis=1), axis=0)
    if len(ratios) != 3 or min(ratios) <= 0:
        raise ValueError("ratios must be three positive numbers (train, valid, test)")
    order = np.random.default_rng(seed).permutation(len(pairs))
    bounds = np.cumsum(ratios)[:2] * len(pairs) // sum(ratios)
    parts = np.split(pairs[order], bounds)

    def per_user(part: np.ndarray) -> list[np.ndarray]:
        part = part[np.lexsort((part[:, 1], part[:, 0]))]
        counts = np.bincount(part[:, 0], minlength=n_users)
        return np.split(part[:, 1], np.cumsum(counts)[:-1])

    return HoldoutSplit(*(per_user(part) for part in parts))


def holdout_metrics(score_rows: RowScoreFn, exclude: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                    ks: Sequence[int] = DEFAULT_KS, batch_size: int = 2048) -> dict[str, float]:
    """Recall@k and NDCG@k over the users with held-out `targets`, their `exclude` items removed from the ranking."""
    rows = np.array([row for row, items in enumerate(targets) if len(items)], dtype=np.int64)
    if len(rows) == 0:
        raise ValueError("no user has a held-out item")
    max_k = max(ks)
    discounts = 1.0 / np.log2(np.arange(2, max_k + 2))
    totals = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg")}
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        scores = score_rows(batch).clone()
        scores[:, 0] = float("-inf")
        for position, row in enumerate(batch):
            scores[position, torch.from_numpy(np.asarray(exclude[row], dtype=np.int64))] = float("-inf")
        top = torch.topk(scores, max_k, dim=1).indices.numpy()
        for position, row in enumerate(batch):
            relevant = np.isin(top[position], targets[row])
            n_relevant = len(targets[row])
            for k in ks:
                hits = relevant[:k]
                totals[f"recall@{k}"] += hits.sum() / n_relevant
                ideal = discounts[:min(k, n_relevant)].sum()
                totals[f"ndcg@{k}"] += (discounts[:k] * hits).sum() / ideal
    return {name: float(value / len(rows)) for name, value in totals.items()}
