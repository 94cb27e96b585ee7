"""Fit a GenerativeRerank (`ml/models/generative_rerank.py`): the generative model's weight, on validation only.

Nothing is trained: the first stage (the served blend, or any model with full-ranking scores) and
the generative model are the checkpoints their own runs selected. Each validation batch is scored
once by the first stage and once by the generative model (its log-likelihood of the first stage's
top N), after a first pass over a fixed sample of users that sets the scale; every rho of the grid
is then only a sum and a ranking. The rho with the best validation
NDCG@10 is kept (ties: the smaller rho; rho = 0 is the first stage alone, so the second stage is
used only where validation says it helps). The test split is never read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ml.evaluate.ranking import ranking_metrics, ranks_from_scores
from ml.models.generative_rerank import (
    CandidateScorer,
    FirstStage,
    GenerativeRerank,
    RerankConfig,
    reranked_scores,
    scored_candidates,
)
from ml.train.popularity_adjustment import CRITERION

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankFit:
    """The fitted second stage, its validation metrics and how every rho of the grid did."""

    model: GenerativeRerank
    rho: float
    scale: float
    best_valid: dict[str, float]
    valid_by_rho: dict[float, dict[str, float]]

    def summary(self) -> dict[str, Any]:
        """The chosen rho, weight and scale and every rho's validation NDCG@10, for logs and results."""
        return {"rerank_rho": self.rho, "rerank_scale": self.scale, "rerank_weight": self.model.weight,
                "rerank_candidates": self.model.candidates,
                "valid_ndcg@10_by_rho": {f"{rho:g}": round(metrics[CRITERION], 6)
                                         for rho, metrics in self.valid_by_rho.items()}}


def _finite_std(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.std()) if finite.numel() > 1 else 0.0


@torch.no_grad()
def candidate_scale(first_stage: FirstStage, generative: CandidateScorer, histories: Sequence[np.ndarray],
                    config: RerankConfig) -> float:
    """std(first-stage scores) / std(generative log-likelihoods) over the candidates of `histories` (a fixed sample)."""
    first_spread, generative_spread = [], []
    for start in range(0, len(histories), config.batch_size):
        first, columns, log_likelihood = scored_candidates(first_stage, generative,
                                                            histories[start: start + config.batch_size],
                                                            config.candidates)
        first_spread.append(first.gather(1, columns).flatten())
        generative_spread.append(log_likelihood.flatten())
    generative_std = _finite_std(torch.cat(generative_spread))
    if not generative_std > 0:
        raise ValueError("the generative model scores every candidate the same: nothing to re-rank with")
    # A first stage that scores its candidates alike (e.g. popularity on a flat catalogue) leaves their order to
    # the generative model: rho is then in units of the generative spread.
    return (_finite_std(torch.cat(first_spread)) or 1.0) / generative_std


@torch.no_grad()
def fit_rerank(first_stage: FirstStage, generative: CandidateScorer, histories: Sequence[np.ndarray],
               targets: np.ndarray, config: RerankConfig | None = None) -> RerankFit:
    """The rerank of the rho with the best validation NDCG@10 over `histories` (validation users) and `targets`."""
    config = config or RerankConfig()
    targets = np.asarray(targets, dtype=np.int64)
    grid = sorted(set(config.weights))
    ranks = {rho: np.zeros(len(targets), dtype=np.int64) for rho in grid}
    scale = candidate_scale(first_stage, generative, list(histories[: config.scale_sample_users]), config)
    # Shortest histories first, as the evaluator does: a batch is padded only to its longest history.
    order = np.argsort([len(history) for history in histories], kind="stable")
    for start in range(0, len(order), config.batch_size):
        rows = order[start: start + config.batch_size]
        first, columns, log_likelihood = scored_candidates(first_stage, generative, [histories[row] for row in rows],
                                                            config.candidates)
        for rho in grid:  # rho = 0 is the first stage as served (`GenerativeRerank` skips the second stage)
            scores = first if rho == 0 else reranked_scores(first, columns, log_likelihood, rho * scale)
            ranks[rho][rows] = ranks_from_scores(scores, targets[rows])
    valid_by_rho = {rho: ranking_metrics(ranks[rho]) for rho in grid}
    for rho in grid:
        logger.info("rerank rho %.2f: valid ndcg@10 %.5f", rho, valid_by_rho[rho][CRITERION])
    rho = max(grid, key=lambda value: (valid_by_rho[value][CRITERION], -value))
    model = GenerativeRerank(first_stage, generative, config.candidates, rho * scale)
    logger.info("rerank: rho %.2f (weight %.4f, scale %.4f), valid %s", rho, rho * scale, scale, valid_by_rho[rho])
    return RerankFit(model=model, rho=rho, scale=scale, best_valid=valid_by_rho[rho], valid_by_rho=valid_by_rho)
