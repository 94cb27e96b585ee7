"""Choose a post-hoc popularity adjustment for a trained SASRec-family model, on validation only.

A full-softmax model learns the items' popularity into their scores (the head items' vectors grow
long), which is right for the average user and costs the long tail. Menon et al. (ICLR 2021,
*Long-tail learning via logit adjustment*) correct it after training: score(u, i) - beta x log prior(i).
Here the prior is the item's training count (log(1 + count), so an item never seen in training keeps
a finite score), and one model serves any beta without retraining.

Which beta is a product decision the paper leaves open. We choose the beta of a grid that maximises
the *balanced* validation NDCG@10: the mean of NDCG@10 over all validation users and over the users
whose target is a long-tail item (outside the top 20% by training count, `ml/evaluate/slices.py`),
so the head and the tail count the same, as in Menon et al.'s balanced error. Ties go to the smaller
beta; beta = 0 (the raw scores) is always in the grid, so the rule can always decline to adjust. The
test split is never read. The history-ranked protocol is the one scored, as in epoch selection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ml.data.sequences import SequenceData
from ml.evaluate.ranking import ranking_metrics, ranks_from_scores
from ml.evaluate.slices import SliceConfig, item_train_counts, slice_masks, slice_metrics
from ml.models.sasrec import SASRec, left_pad, log_popularity

logger = logging.getLogger(__name__)

CRITERION = "ndcg@10"


@dataclass(frozen=True)
class PopularityChoice:
    """The chosen beta, every beta's balanced validation NDCG@10 and validation metrics (with the long tail's)."""

    beta: float
    balanced: dict[float, float]
    by_beta: dict[float, dict[str, float]]  # validation metrics, plus "long_tail_ndcg@10" when any target is

    @property
    def valid(self) -> dict[str, float]:
        """The chosen beta's validation metrics over all users."""
        return {key: value for key, value in self.by_beta[self.beta].items() if not key.startswith("long_tail_")}


def balanced_score(all_users: float, long_tail: float | None) -> float:
    """Mean of the all-users and long-tail-users metric; the all-users one alone when no target is long-tail."""
    return all_users if long_tail is None else (all_users + long_tail) / 2.0


def balanced_metrics(ranks: np.ndarray, long_tail: np.ndarray) -> tuple[dict[str, float], float]:
    """Validation metrics of `ranks` (plus the long tail's criterion, if any); the balanced score."""
    metrics = ranking_metrics(ranks)
    tail = slice_metrics(ranks, {"long_tail": long_tail})["long_tail"].get(CRITERION)
    if tail is not None:
        metrics[f"long_tail_{CRITERION}"] = tail
    return metrics, balanced_score(metrics[CRITERION], tail)


@torch.no_grad()
def choose_popularity_adjustment(
    model: SASRec, data: SequenceData, betas: Sequence[float], batch_size: int = 1024,
    slices: SliceConfig | None = None,
) -> PopularityChoice:
    """Set on `model` the beta of `betas` with the best balanced validation NDCG@10 (module doc); return the choice."""
    if not betas:
        raise ValueError("need at least one beta to choose from")
    grid = sorted({float(beta) for beta in betas})
    counts = item_train_counts(data.train, data.n_items)
    histories, targets = data.history("valid")
    long_tail = slice_masks(histories, targets, counts, slices or SliceConfig())["long_tail_items"]
    log_counts = log_popularity(counts).to(model.device)
    model.eval()
    # Neither the encoder nor the raw scores depend on beta: score each batch of users once, then rank
    # its targets under every beta (the same ranking function as the evaluator, ties against the model).
    table = model.item_table()
    ranks = {beta: np.zeros(len(targets), dtype=np.int64) for beta in grid}
    # Shortest histories first, as the evaluator does: a batch is padded only to its longest history.
    order = np.argsort([len(history) for history in histories], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = [histories[row] for row in rows]
        raw = model.encode(left_pad(batch, model.max_len).to(model.device), table)[:, -1] @ table.T
        for beta in grid:
            ranks[beta][rows] = ranks_from_scores(raw - beta * log_counts, targets[rows])
    balanced: dict[float, float] = {}
    metrics: dict[float, dict[str, float]] = {}
    for beta in grid:
        metrics[beta], balanced[beta] = balanced_metrics(ranks[beta], long_tail)
        logger.info("popularity beta %.3f: valid %s %.5f, balanced %.5f", beta, CRITERION,
                    metrics[beta][CRITERION], balanced[beta])
    best = max(balanced, key=lambda beta: (balanced[beta], -beta))  # ties: the smaller adjustment
    model.set_popularity_adjustment(counts, best)
    return PopularityChoice(beta=best, balanced=balanced, by_beta=metrics)
