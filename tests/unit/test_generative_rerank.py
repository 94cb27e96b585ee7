"""The generative second stage: candidate scores, the full ranking it keeps, and its weight chosen on validation."""

import numpy as np
import pytest
import torch

from ml.evaluate.ranking import evaluate_model
from ml.models.eager import EAGERConfig
from ml.models.generative_rerank import GenerativeRerank, RerankConfig, reranked_scores, top_candidates
from ml.models.popularity import PopularityModel
from ml.train.eager_training import train_eager
from ml.train.rerank_selection import fit_rerank
from tests.unit.test_eager import N_ITEMS, TINY, _cycle_data, _streams

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _first_scores() -> torch.Tensor:
    """Two users over 6 items, distinct scores (column 0 is the padding item)."""
    return torch.tensor([[float("-inf"), 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
                         [float("-inf"), 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])


def test_top_candidates_are_the_best_real_items_best_first() -> None:
    assert top_candidates(_first_scores(), 3).tolist() == [[1, 2, 3], [6, 5, 4]]
    assert top_candidates(_first_scores(), 50).shape == (2, 6)  # at most the catalogue


def test_weight_zero_keeps_the_first_stage_ranking_and_a_weight_reorders_only_the_candidates() -> None:
    first = _first_scores()
    columns = top_candidates(first, 3)
    # The generative model prefers each user's third candidate by far, then the second.
    log_likelihood = torch.tensor([[-9.0, -2.0, -1.0], [-9.0, -2.0, -1.0]])
    unchanged = reranked_scores(first, columns, log_likelihood, 0.0)
    assert torch.equal(unchanged[:, 1:].argsort(dim=1, descending=True), first[:, 1:].argsort(dim=1, descending=True))
    scores = reranked_scores(first, columns, log_likelihood, 10.0)
    order = (scores[:, 1:].argsort(dim=1, descending=True) + 1).tolist()
    assert order == [[3, 2, 1, 4, 5, 6], [4, 5, 6, 3, 2, 1]]  # candidates re-ordered, the rest in first-stage order
    assert torch.isneginf(scores[:, 0]).all()
    worst_candidate = scores.gather(1, columns).min(dim=1).values
    others = scores.clone().scatter_(1, columns, float("-inf"))[:, 1:].max(dim=1).values
    assert (others < worst_candidate).all()


def test_candidate_log_likelihood_is_the_rerank_merges_score_of_the_same_items() -> None:
    data = _cycle_data()
    model = train_eager(data, _streams(), EAGERConfig(**{**TINY, "max_epochs": 5, "merge": "rerank"})).model.eval()
    histories = data.history("valid")[0][:8]
    ranked = model.recommend(histories)
    candidates = np.full((len(ranked), max(len(row) for row in ranked)), -1)
    for row, items in enumerate(ranked):
        candidates[row, : len(items)] = [item for item, _ in items]
    scores = model.candidate_log_likelihood(histories, candidates)
    for row, items in enumerate(ranked):
        np.testing.assert_allclose(scores[row, : len(items)], [score for _, score in items], atol=1e-4)
        assert np.isneginf(scores[row, len(items):]).all()


@pytest.fixture(scope="module")
def cycle_models() -> tuple:
    """Popularity (a weak first stage on the cycle: every item about as frequent) and an EAGER that learnt it."""
    data = _cycle_data()
    eager = train_eager(data, _streams(), EAGERConfig(**TINY)).model.eval()
    return data, PopularityModel.fit(data.train, data.n_items), eager


@pytest.mark.parametrize("candidates", [N_ITEMS, 4])
def test_fit_rerank_chooses_a_positive_weight_when_the_generative_model_knows_better(cycle_models: tuple,
                                                                                    candidates: int) -> None:
    data, popularity, eager = cycle_models
    histories, targets = data.history("valid")
    fit = fit_rerank(popularity, eager, histories, targets, RerankConfig(candidates=candidates, batch_size=16))
    first_alone = evaluate_model(popularity.score, histories, targets).metrics["ndcg@10"]
    assert fit.valid_by_rho[0.0]["ndcg@10"] == pytest.approx(first_alone)
    assert fit.rho > 0 and fit.model.weight == pytest.approx(fit.rho * fit.scale)
    assert fit.best_valid["ndcg@10"] > first_alone
    # The fitted model scores as the selection did.
    assert evaluate_model(fit.model.score, histories, targets).metrics["ndcg@10"] == pytest.approx(
        fit.best_valid["ndcg@10"])
    if candidates == N_ITEMS:  # every item is a candidate: the rerank finds every user's next item
        assert fit.best_valid["mrr"] == pytest.approx(1.0)
    assert set(fit.summary()["valid_ndcg@10_by_rho"]) == {f"{rho:g}" for rho in RerankConfig().weights}


def test_a_rerank_at_weight_zero_is_the_first_stage(cycle_models: tuple) -> None:
    data, popularity, eager = cycle_models
    histories, _ = data.history("test")
    assert torch.equal(GenerativeRerank(popularity, eager, 4, 0.0).score(histories), popularity.score(histories))
    with pytest.raises(ValueError, match="candidates"):
        RerankConfig(candidates=0)
    with pytest.raises(ValueError, match="weights"):
        RerankConfig(weights=(-1.0,))
