"""Evaluation slices: which users' ranks to average for cold / long-tail targets and short histories.

Item popularity comes from training interaction counts only, so no validation or test interaction
leaks into the slice definitions. Slices (boolean masks over the evaluated users):

- head_items / long_tail_items: the target is among the top `head_share` of items by training count
  (ties broken by item index, so the head set has exactly ceil(head_share x n_items) items) or not;
- cold_items: the target has at most `cold_max_count` training interactions;
- short_history_users / long_history_users: the evaluation history has at most `short_history_max` items.

An empty slice is reported with `users = 0` and no metrics rather than dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ml.evaluate.ranking import DEFAULT_KS, ranking_metrics


@dataclass(frozen=True)
class SliceConfig:
    """Where the popularity and history-length slices are cut."""

    head_share: float = 0.2
    cold_max_count: int = 4
    short_history_max: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < self.head_share < 1.0:
            raise ValueError(f"head_share must lie in (0, 1), not {self.head_share}")
        if self.cold_max_count < 0 or self.short_history_max < 1:
            raise ValueError("need cold_max_count >= 0 and short_history_max >= 1")


def item_train_counts(train: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """(n_items + 1,) int64 training interaction count of every item index (index 0, padding, is 0)."""
    flat = np.concatenate([np.asarray(seq, dtype=np.int64) for seq in train]) if len(train) else np.zeros(0, np.int64)
    counts = np.bincount(flat, minlength=n_items + 1).astype(np.int64)
    if len(counts) != n_items + 1:
        raise ValueError(f"training sequences hold item indices above {n_items}")
    counts[0] = 0
    return counts


def slice_masks(
    histories: Sequence[np.ndarray], targets: np.ndarray, train_counts: np.ndarray, config: SliceConfig
) -> dict[str, np.ndarray]:
    """Boolean user masks of every slice (see the module docstring), 'all' included."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(histories) != len(targets):
        raise ValueError(f"{len(histories)} histories for {len(targets)} targets")
    n_items = len(train_counts) - 1
    n_head = math.ceil(config.head_share * n_items)
    # Most interactions first; a stable sort on the negated counts keeps lower indices first among ties.
    by_popularity = np.argsort(-train_counts[1:], kind="stable") + 1
    is_head = np.zeros(n_items + 1, dtype=bool)
    is_head[by_popularity[:n_head]] = True
    lengths = np.array([len(history) for history in histories], dtype=np.int64)
    short = lengths <= config.short_history_max
    return {
        "all": np.ones(len(targets), dtype=bool),
        "head_items": is_head[targets],
        "long_tail_items": ~is_head[targets],
        "cold_items": train_counts[targets] <= config.cold_max_count,
        "short_history_users": short,
        "long_history_users": ~short,
    }


def slice_metrics(
    ranks: np.ndarray, masks: dict[str, np.ndarray], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, dict[str, float]]:
    """Ranking metrics of each slice's users, with `users` (their count); an empty slice has only users = 0."""
    ranks = np.asarray(ranks)
    result: dict[str, dict[str, float]] = {}
    for name, mask in masks.items():
        if mask.shape != ranks.shape:
            raise ValueError(f"slice {name} masks {mask.shape} users, ranks are {ranks.shape}")
        users = int(mask.sum())
        result[name] = {**ranking_metrics(ranks[mask], ks), "users": float(users)} if users else {"users": 0.0}
    return result
