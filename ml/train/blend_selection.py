"""Fit a Blend (`ml/models/blend.py`) of two trained models: its weight and popularity offset, on validation only.

Nothing is trained: both components are the checkpoints their own training runs selected. The rule is
the popularity adjustment's (`ml/train/popularity_adjustment.py`), extended to a second dimension:
for every (rho, beta) of the grids, rank the validation targets by
s_seq + rho x scale x s_learn - beta x log(1 + count), and keep the pair with the best validation
NDCG@10 (over all users by default, or balanced with the long-tail users: `BlendConfig.criterion`;
ties: smaller rho, then smaller beta). `scale` = std(s_seq) / std(s_learn) over a fixed
sample of validation users, so rho is the content model's share of the score spread. Each validation
batch is scored once by each component; every pair is then only a sum and a ranking. The test split
is never read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ml.data.sequences import SequenceData
from ml.evaluate.ranking import ranks_from_scores
from ml.evaluate.slices import SliceConfig, item_train_counts, slice_masks
from ml.models.blend import BlendConfig, ScoreBlend, blend_scores
from ml.models.learn import LEARN
from ml.models.sasrec import SASRec, log_popularity
from ml.train.popularity_adjustment import CRITERION, balanced_metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlendResult:
    """The fitted blend, in the shape of a trainer's result (no epochs: best_epoch 0, empty history)."""

    model: ScoreBlend
    config: BlendConfig
    best_valid: dict[str, float]
    extra: dict[str, Any]  # the chosen rho, beta and scale, and every pair's balanced criterion
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _real_item_std(scores: torch.Tensor) -> float:
    return float(scores[:, 1:].float().std())


@torch.no_grad()
def score_scale(sequence_model: SASRec, content_model: LEARN, histories: list[np.ndarray]) -> float:
    """std(sequence scores) / std(content scores) over real items, for `histories` (a fixed sample of users)."""
    sequence_std = _real_item_std(sequence_model.score(histories))
    content_std = _real_item_std(content_model.score(histories))
    if not content_std > 0:
        raise ValueError("the content model scores every item the same: nothing to blend")
    return sequence_std / content_std


@torch.no_grad()
def fit_blend(
    sequence_model: SASRec, content_model: LEARN, data: SequenceData, config: BlendConfig | None = None,
    slices: SliceConfig | None = None,
) -> BlendResult:
    """Build the blend of the two trained models with the (rho, beta) of the best validation criterion."""
    config = config or BlendConfig()
    blend = ScoreBlend(sequence_model, content_model, config)  # zeroes the sequence model's own offset
    blend.eval()
    counts = item_train_counts(data.train, data.n_items)
    histories, targets = data.history("valid")
    long_tail = slice_masks(histories, targets, counts, slices or SliceConfig())["long_tail_items"]
    log_counts = log_popularity(counts).to(blend.device)
    weights, betas = sorted(set(config.weights)), sorted(set(config.betas))
    pairs = [(rho, beta) for rho in weights for beta in betas]
    ranks = {pair: np.zeros(len(targets), dtype=np.int64) for pair in pairs}
    with blend.cached_items():
        scale = score_scale(sequence_model, content_model, list(histories[: config.scale_sample_users]))
        # Shortest histories first, as the evaluator does: a batch is padded only to its longest history.
        order = np.argsort([len(history) for history in histories], kind="stable")
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            batch = [histories[row] for row in rows]
            sequence_scores, content_scores = sequence_model.score(batch), content_model.score(batch)
            for rho in weights:
                summed = blend_scores(sequence_scores, content_scores, rho * scale, torch.zeros_like(log_counts))
                for beta in betas:
                    ranks[(rho, beta)][rows] = ranks_from_scores(summed - beta * log_counts, targets[rows])
    metrics: dict[tuple[float, float], dict[str, float]] = {}
    balanced: dict[tuple[float, float], float] = {}
    for pair in pairs:
        metrics[pair], balanced[pair] = balanced_metrics(ranks[pair], long_tail)
        logger.info("blend rho %.2f beta %.2f: valid ndcg@10 %.5f, balanced %.5f", *pair,
                    metrics[pair]["ndcg@10"], balanced[pair])
    criterion = balanced if config.criterion == "balanced" else {pair: metrics[pair][CRITERION] for pair in pairs}
    rho, beta = max(pairs, key=lambda pair: (criterion[pair], -pair[0], -pair[1]))
    blend.set_blend(rho * scale, counts, beta)
    best_valid = {key: value for key, value in metrics[(rho, beta)].items() if not key.startswith("long_tail_")}
    extra = {
        "blend_weight": rho, "blend_scale": scale, "popularity_beta": beta,
        "balanced_valid_ndcg@10": balanced[(rho, beta)],
        "valid_ndcg@10_by_pair": {f"rho={r:g},beta={b:g}": round(metrics[(r, b)][CRITERION], 6) for r, b in pairs},
        "balanced_by_pair": {f"rho={r:g},beta={b:g}": round(value, 6) for (r, b), value in balanced.items()},
    }
    logger.info("blend: rho %.2f (weight %.4f), beta %.2f, valid %s", rho, rho * scale, beta, best_valid)
    return BlendResult(model=blend, config=config, best_valid=best_valid, extra=extra)
