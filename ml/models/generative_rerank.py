"""A second stage: a generative model's path log-likelihood re-scores a first stage's top candidates.

    score(u, i) = s_first(u, i) + w x log p_gen(i | u)      for i in the first stage's top N
    score(u, i) below every candidate, in s_first's order   for every other item

Why: a generative recommender (EAGER) names items by code paths and has no item vectors, so it
cannot join the served inner product (`ml/models/blend.py`); what it can do cheaply is score a
given item's path (`EAGER.candidate_log_likelihood`, one decoder pass per candidate, no beam). The
classic two-stage recommender (retrieve, then rank; Covington et al., 2016) lets the served
blend retrieve N candidates and adds the generative model's evidence to their scores.

Choices the sources leave open, and what we do:
- candidates are the first stage's top N (default 50, five times the cut-off the project selects
  on): the generative score can lift any of them into the top 10, never an item the first stage
  ranks below N. The second stage's cost grows with N (one decoder pass per candidate and stream),
  so N is a config value;
- the weight is relative, as the blend's: w = rho x std(s_first) / std(log p_gen), both spreads
  measured over the candidates of a fixed sample of validation users, so rho means the same on
  every dataset and for every first stage; rho is chosen on validation NDCG@10, rho = 0 (the first
  stage alone) in every grid (`ml/train/rerank_selection.py`);
- items outside the candidates keep the first stage's order, shifted to sit below the weakest
  candidate, so the ranking stays a full ranking for the shared evaluator (ties against the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

DEFAULT_RERANK_WEIGHTS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


class FirstStage(Protocol):
    """A model with full-ranking scores: (batch, n_items + 1), column 0 the padding item."""

    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor: ...


class CandidateScorer(Protocol):
    """A generative model that scores given items: (users, C) log-likelihoods of 0-based rows (-1 = none)."""

    def candidate_log_likelihood(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RerankConfig:
    """How many first-stage candidates the generative model re-scores, and the grid its relative weight comes from."""

    candidates: int = 50
    weights: tuple[float, ...] = DEFAULT_RERANK_WEIGHTS
    scale_sample_users: int = 2048
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.scale_sample_users < 1 or self.batch_size < 1:
            raise ValueError("candidates, scale_sample_users and batch_size must be at least 1")
        if not self.weights or any(not np.isfinite(rho) or rho < 0 for rho in self.weights):
            raise ValueError(f"weights must be finite and >= 0, got {list(self.weights)}")


def top_candidates(first_scores: torch.Tensor, n: int) -> torch.Tensor:
    """(users, min(n, n_items)) columns (1-based items) of each row's n best first-stage scores, best first."""
    real = first_scores[:, 1:]
    return real.topk(min(n, real.shape[1]), dim=1).indices + 1


def reranked_scores(first_scores: torch.Tensor, columns: torch.Tensor, log_likelihood: torch.Tensor,
                    weight: float) -> torch.Tensor:
    """Full-ranking scores: candidates (`columns`) at s_first + weight x log-likelihood, the rest below them.

    The non-candidates keep their first-stage order, shifted so that the best of them sits one below
    the weakest candidate; the padding column stays -inf.
    """
    first = first_scores.float()
    candidate_scores = first.gather(1, columns) + weight * log_likelihood.to(first)
    is_candidate = torch.zeros_like(first, dtype=torch.bool).scatter_(1, columns, True)
    is_candidate[:, 0] = True  # the padding column is not a real item: kept out of the shift
    others = first.masked_fill(is_candidate, float("-inf"))
    best_other = others.max(dim=1, keepdim=True).values
    shift = torch.where(torch.isfinite(best_other), best_other - candidate_scores.min(dim=1, keepdim=True).values + 1,
                        torch.zeros_like(best_other))
    scores = torch.where(is_candidate, first, first - shift)
    scores = scores.scatter(1, columns, candidate_scores)
    scores[:, 0] = float("-inf")
    return scores


def scored_candidates(first_stage: FirstStage, generative: CandidateScorer, histories: Sequence[np.ndarray],
                      candidates: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-stage scores, their top candidates' columns and the generative log-likelihood of each candidate."""
    first = first_stage.score(histories).float().cpu()
    columns = top_candidates(first, candidates)
    return first, columns, torch.from_numpy(generative.candidate_log_likelihood(histories, columns.numpy() - 1))


class GenerativeRerank:
    """The first stage's ranking with its top candidates re-scored by a generative model (see the module doc)."""

    def __init__(self, first_stage: FirstStage, generative: CandidateScorer, candidates: int, weight: float) -> None:
        if candidates < 1:
            raise ValueError("candidates must be at least 1")
        self.first_stage = first_stage
        self.generative = generative
        self.candidates = candidates
        self.weight = weight

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(batch, n_items + 1) full-ranking scores of the re-scored ranking."""
        if self.weight == 0:  # the first stage alone: the generative pass would change nothing
            return self.first_stage.score(histories)
        return reranked_scores(*scored_candidates(self.first_stage, self.generative, histories, self.candidates),
                               self.weight)
