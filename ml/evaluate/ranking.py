"""Full-ranking leave-one-out evaluation: each user's held-out item is ranked against every item.

Conventions (the same for every model, as in RecBole's evaluator):

- Scores have one column per item index, column 0 being the padding index, which is never ranked.
- Ties count against the model: rank = 1 + number of other items scoring at least as high as the
  target. A model that scores everything equally therefore ranks the target last, not first.
- With one target per user, recall@k equals the hit rate @k; NDCG@k = 1 / log2(rank + 1) when
  rank <= k (the ideal DCG of a single relevant item is 1); MRR = mean of 1 / rank over all users.
- History masking is optional and off by default: when on, a user's history items (except the
  target itself) are excluded from the ranking, as if scored -inf.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)

# histories -> (batch, n_items + 1) scores; a model that scores users by row (graph CF) also takes the
# batch's user rows, which the evaluator passes when it is given `user_rows`.
ScoreFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class RankingResult:
    """Metrics of one evaluation and the target's 1-based rank per user (to compare models per user)."""

    metrics: dict[str, float]
    ranks: np.ndarray  # (n_users,) int64


def ranks_from_scores(
    scores: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    exclude: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """1-based rank of each row's target among items 1..n (ties against the model); `exclude` masks history items."""
    scores = torch.as_tensor(scores)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (n_users, n_items + 1) with a padding column 0, got {tuple(scores.shape)}")
    if not isinstance(targets, torch.Tensor):
        targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    targets = targets.to(device=scores.device, dtype=torch.int64)
    if targets.shape != (scores.shape[0],):
        raise ValueError(f"need one target per row: {tuple(targets.shape)} targets for {scores.shape[0]} rows")
    if len(targets) and (int(targets.min()) < 1 or int(targets.max()) >= scores.shape[1]):
        raise ValueError(f"targets must be item indices in 1..{scores.shape[1] - 1}")
    # A NaN would compare False against everything and silently rank the target first.
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    rows = torch.arange(len(targets), device=scores.device)
    target_scores = scores[rows, targets].unsqueeze(1)
    if exclude is None:
        # The same count in one pass: the target (not NaN, checked above) is among the items >= its own score.
        return (scores[:, 1:] >= target_scores).sum(dim=1).cpu().numpy().astype(np.int64)
    at_least_as_good = scores >= target_scores
    at_least_as_good[:, 0] = False  # padding is not an item
    at_least_as_good[rows, targets] = False  # the target does not outrank itself
    if exclude is not None:
        if len(exclude) != len(targets):
            raise ValueError(f"need one history per row: {len(exclude)} histories for {len(targets)} rows")
        lengths = [len(items) for items in exclude]
        if sum(lengths):
            history_rows = torch.repeat_interleave(rows, torch.as_tensor(lengths, device=scores.device))
            history_items = torch.as_tensor(np.concatenate(exclude).astype(np.int64), device=scores.device)
            at_least_as_good[history_rows, history_items] = False
    return (1 + at_least_as_good.sum(dim=1)).cpu().numpy().astype(np.int64)


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Recall@k (= hit rate@k), NDCG@k and MRR averaged over users, from 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim != 1 or len(ranks) == 0:
        raise ValueError("ranks must be a non-empty 1-D array")
    if (ranks < 1).any():
        raise ValueError("ranks are 1-based")
    gain = 1.0 / np.log2(ranks + 1.0)
    metrics: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        metrics[f"recall@{k}"] = float(hit.mean())
        metrics[f"ndcg@{k}"] = float(np.where(hit, gain, 0.0).mean())
    metrics["mrr"] = float((1.0 / ranks).mean())
    return metrics


@torch.no_grad()
def evaluate_protocols(
    score_fn: ScoreFn,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    batch_size: int = 1024,
    ks: Sequence[int] = DEFAULT_KS,
    protocols: Sequence[bool] = (False, True),
    user_rows: np.ndarray | None = None,
) -> dict[bool, RankingResult]:
    """Rank the targets under each protocol (mask_history False / True) from one scoring pass per batch.

    Published numbers come in both protocols (the generative-retrieval papers rank history items,
    stronger ID baselines are often reported with them removed), so both are measured on the same scores.
    With `user_rows` (one per history), `score_fn` is called as score_fn(histories, user_rows) of the batch.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if len(histories) != len(targets):
        raise ValueError(f"{len(histories)} histories for {len(targets)} targets")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    if not protocols:
        raise ValueError("need at least one protocol")
    if user_rows is not None:
        user_rows = np.asarray(user_rows, dtype=np.int64)
        if user_rows.shape != targets.shape:
            raise ValueError(f"{len(user_rows)} user rows for {len(targets)} targets")
    # Users are scored shortest history first: a batch of sequence models is padded to its longest
    # history, and most users' histories are short. Ranks go back to the callers' order.
    order = np.argsort([len(items) for items in histories], kind="stable")
    all_ranks = {masked: np.zeros(len(targets), dtype=np.int64) for masked in protocols}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = [histories[row] for row in rows]
        scores = score_fn(batch) if user_rows is None else score_fn(batch, user_rows[rows])
        for masked, ranks in all_ranks.items():
            ranks[rows] = ranks_from_scores(scores, targets[rows], batch if masked else None)
    results = {masked: RankingResult(metrics=ranking_metrics(ranks, ks), ranks=ranks)
               for masked, ranks in all_ranks.items()}
    logger.debug("evaluated %d users: %s", len(targets), {masked: r.metrics for masked, r in results.items()})
    return results


def evaluate_model(
    score_fn: ScoreFn,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    batch_size: int = 1024,
    ks: Sequence[int] = DEFAULT_KS,
    mask_history: bool = False,
    user_rows: np.ndarray | None = None,
) -> RankingResult:
    """Score users in batches with `score_fn` (histories -> (batch, n_items + 1)), rank their targets, average."""
    return evaluate_protocols(score_fn, histories, targets, batch_size, ks, (mask_history,), user_rows)[mask_history]
