"""Blend: one served model that adds LEARN's content scores to a SASRec-family model's scores.

    score(u, i) = s_seq(u, i) + w x s_learn(u, i) - beta x log(1 + training count of i)

Why: the two LLM-enhanced models fail in opposite places. Content-SASRec (full softmax over its ID
and content views) is strong on head items and learns the catalogue's popularity into its scores;
LEARN (frozen content through a Transformer, in-batch contrastive loss) places items by what their
text says, so it ranks long-tail and cold items far better (amazon-beauty, test, cold items: LEARN
R@10 0.0507 against the dual view's 0.0383) and head items worse. A weighted sum of the two scores
is a linear late-fusion ensemble, the classic hybrid of a collaborative and a content recommender
(Burke, 2002, "weighted" hybrid); the popularity term is Menon et al.'s post-hoc logit adjustment
(`ml/train/popularity_adjustment.py`), owned by the blend, so the sequence model's own offset is set
to zero here and beta is chosen for the sum.

Choices the sources leave open, and what we do:
- the weight is relative: w = rho x std(s_seq) / std(s_learn), each model's score spread measured on
  a fixed sample of validation users, because the two score scales differ by a factor of about 25
  (softmax logits against LEARN's temperature-scaled cosines) and a relative grid then means the
  same on every dataset (rho = 1: both spread alike);
- rho and beta are chosen together, on validation only, by NDCG@10 over all users (`criterion:
  ndcg@10`, the default): the metric every model's epoch and the published model are selected on,
  so the blend competes with its components on equal terms and is published only when it is better
  on validation. `criterion: balanced` uses the popularity rule's criterion instead (all users and
  long-tail-target users count the same). Ties go to the smaller rho, then the smaller beta. rho = 0
  and beta = 0 are in every grid, so the blend can fall back to the sequence model alone
  (`ml/train/blend_selection.py`);
- served as one inner product, so the published faiss index ranks exactly as `score`: user vector
  [u_seq, w u_learn, 1], item vector [i_seq, i_learn, offset_i] (`ml/models/checkpoints.py`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from ml.models.learn import LEARN
from ml.models.sasrec import SASRec, log_popularity
from ml.models.selection_grids import DEFAULT_BLEND_WEIGHTS, DEFAULT_POPULARITY_BETAS
from ml.models.settings import setting

BlendCriterion = Literal["ndcg@10", "balanced"]


def _check_grid(name: str, values: Sequence[float]) -> None:
    if not values:
        raise ValueError(f"{name} needs at least one value")
    if any(not math.isfinite(value) or value < 0 for value in values):
        raise ValueError(f"{name} must be finite and >= 0, got {list(values)}")


@dataclass(frozen=True)
class BlendConfig:
    """The grids the blend's weight (relative, rho) and popularity offset (beta) are chosen from, on validation."""

    weights: tuple[float, ...] = setting(DEFAULT_BLEND_WEIGHTS, "rho grid: LEARN's share of the score spread "
                                         "(0 = the sequence model alone; 1 = both spread alike).")
    betas: tuple[float, ...] = setting(DEFAULT_POPULARITY_BETAS, "Popularity offset grid: serve scores minus "
                                       "beta x log(1 + training count) (0 = none).")
    scale_sample_users: int = setting(2048, "Validation users (the first ones, in split order) the score spreads "
                                      "are read on.")
    batch_size: int = setting(1024, "Users scored at once in each validation ranking pass.")
    criterion: BlendCriterion = setting("ndcg@10", "ndcg@10 = validation NDCG@10 over all users (what the "
                                        "published model is selected on); balanced = the mean of it and the "
                                        "long-tail users' (the popularity rule's criterion).")

    def __post_init__(self) -> None:
        if self.criterion not in get_args(BlendCriterion):
            raise ValueError(f"criterion must be one of {get_args(BlendCriterion)}, got {self.criterion!r}")
        _check_grid("weights", self.weights)
        _check_grid("betas", self.betas)
        if self.scale_sample_users < 1 or self.batch_size < 1:
            raise ValueError("scale_sample_users and batch_size must be positive")


def blend_scores(sequence_scores: torch.Tensor, content_scores: torch.Tensor, weight: float | torch.Tensor,
                 item_bias: torch.Tensor) -> torch.Tensor:
    """(batch, n_items + 1) sequence + weight x content + item_bias; column 0 (padding) is -inf."""
    blended = sequence_scores.clone()
    # Column 0 is LEARN's -inf padding: left out of the sum, so a zero weight never makes a NaN.
    blended[:, 1:] += weight * content_scores[:, 1:] + item_bias[1:]
    blended[:, 0] = float("-inf")
    return blended


class ScoreBlend(nn.Module):
    """A SASRec-family model plus w x LEARN, minus a popularity offset (module doc); w and the offset are buffers."""

    def __init__(self, sequence_model: SASRec, content_model: LEARN, config: BlendConfig) -> None:
        super().__init__()
        if sequence_model.n_items != content_model.n_items:
            raise ValueError(f"the components score different catalogues: {sequence_model.n_items} and "
                             f"{content_model.n_items} items")
        self.config = config
        self.n_items = sequence_model.n_items
        self.sequence_model = sequence_model
        self.content_model = content_model
        with torch.no_grad():
            sequence_model.item_bias.zero_()  # the blend owns the popularity offset, chosen for the sum
        self.register_buffer("content_weight", torch.zeros(()))
        self.register_buffer("item_bias", torch.zeros(self.n_items + 1))

    @property
    def device(self) -> torch.device:
        """Device the parameters live on."""
        return self.sequence_model.device

    def set_blend(self, weight: float, train_counts: np.ndarray, beta: float) -> None:
        """Serve sequence + weight x content - beta x log(1 + training count); `weight` in LEARN's score units."""
        if not math.isfinite(weight) or weight < 0 or not math.isfinite(beta) or beta < 0:
            raise ValueError(f"weight and beta must be finite and >= 0, got {weight} and {beta}")
        if np.shape(train_counts) != (self.n_items + 1,):
            raise ValueError(f"need ({self.n_items + 1},) training counts, got shape {np.shape(train_counts)}")
        with torch.no_grad():
            self.content_weight.fill_(weight)
            self.item_bias.copy_(-beta * log_popularity(train_counts))

    def has_item_bias(self) -> bool:
        """Whether a popularity offset is set (the served score is not a plain dot product)."""
        return bool(self.item_bias.any())

    @contextmanager
    def cached_items(self) -> Iterator[None]:
        """Compute LEARN's item matrix once and let `score` reuse it inside the block."""
        with self.content_model.cached_items():
            yield

    def catalogue_matrix(self) -> torch.Tensor:
        """(n_items, d_seq + d_learn) item vectors: both components' side by side, row j = item index j + 1."""
        return torch.cat([self.sequence_model.catalogue_matrix(), self.content_model.catalogue_matrix()], dim=1)

    def user_embedding(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(batch, d_seq + d_learn) query vectors: the sequence model's state and w x LEARN's user vector."""
        return torch.cat([self.sequence_model.user_embedding(histories),
                          self.content_weight * self.content_model.user_embedding(histories)], dim=1)

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(batch, n_items + 1) served scores of every item after each history (column 0 = padding = -inf)."""
        return blend_scores(self.sequence_model.score(histories), self.content_model.score(histories),
                            self.content_weight, self.item_bias)
