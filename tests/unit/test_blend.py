"""The blend of a SASRec-family model and LEARN: served scores, the validation rule, checkpoints, published vectors."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from ml.data.sequences import SequenceData
from ml.evaluate.ranking import evaluate_model
from ml.evaluate.slices import SliceConfig, item_train_counts, slice_masks, slice_metrics
from ml.models.blend import BlendConfig, ScoreBlend, blend_scores
from ml.models.checkpoints import item_vectors, load_checkpoint, save_checkpoint, user_vectors
from ml.models.content_sasrec import ContentSASRec, ContentSASRecConfig
from ml.models.learn import LEARN, LEARNConfig
from ml.models.sasrec import SASRec, log_popularity
from ml.train.blend_selection import fit_blend, score_scale
from ml.train.content_sasrec_training import train_content_sasrec
from ml.train.learn_training import train_learn
from ml.train.popularity_adjustment import balanced_score
from tests.unit.test_popularity_adjustment import SMALL, _skewed_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_LEARN = LEARNConfig.cpu_default(hidden_dim=16, n_layers=1, n_heads=1, output_dim=8, max_len=10, batch_size=32,
                                     max_epochs=3, patience=3, device="cpu")
GRID = BlendConfig(weights=(0.0, 0.5, 1.0, 4.0), betas=(0.0, 0.3, 1.0))


def _content(n_items: int, dim: int = 12, seed: int = 1) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n_items, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def trained() -> tuple[SequenceData, SASRec, LEARN]:
    """A Content-SASRec and a LEARN trained for a few epochs on the same skewed data and content."""
    data = _skewed_data()
    content = _content(data.n_items)
    sequence = train_content_sasrec(data, content, ContentSASRecConfig(**{**SMALL.__dict__, "fusion": "hybrid",
                                                                          "popularity_adjustment": "none"})).model
    learn = train_learn(data, content, TINY_LEARN).model
    return data, sequence, learn


def _fresh(model: torch.nn.Module) -> torch.nn.Module:
    """A copy, so each test blends untouched components (a blend zeroes its sequence model's own offset)."""
    return copy.deepcopy(model)


def test_blend_scores_add_weighted_content_and_offset_and_never_make_nan() -> None:
    sequence = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    content = torch.tensor([[float("-inf"), 0.5, -0.5, 0.0]])  # LEARN's padding column is -inf
    bias = torch.tensor([0.0, -1.0, 0.0, -2.0])
    blended = blend_scores(sequence, content, 2.0, bias)
    assert torch.equal(blended[:, 1:], torch.tensor([[1.0, 1.0, 1.0]]))
    assert blended[0, 0] == float("-inf")
    alone = blend_scores(sequence, content, 0.0, torch.zeros(4))  # 0 x -inf must not leak a NaN
    assert torch.equal(alone[:, 1:], sequence[:, 1:]) and not torch.isnan(alone).any()


def test_the_served_score_is_sequence_plus_weight_content_minus_beta_log_count(trained) -> None:
    data, sequence, learn = trained
    sequence, learn = _fresh(sequence), _fresh(learn)
    counts = item_train_counts(data.train, data.n_items)
    histories = [data.train[0], data.train[5][:3]]
    raw_sequence, raw_content = sequence.score(histories), learn.score(histories)
    blend = ScoreBlend(sequence, learn, GRID)
    blend.set_blend(3.0, counts, 0.2)
    expected = raw_sequence[:, 1:] + 3.0 * raw_content[:, 1:] - 0.2 * log_popularity(counts)[1:]
    assert torch.allclose(blend.score(histories)[:, 1:], expected, atol=1e-5)
    with pytest.raises(ValueError, match="finite and >= 0"):
        blend.set_blend(-1.0, counts, 0.1)
    with pytest.raises(ValueError, match="catalogues"):
        ScoreBlend(SASRec(data.n_items + 1, SMALL), learn, GRID)
    with pytest.raises(ValueError, match="weights"):
        BlendConfig(weights=())
    with pytest.raises(ValueError, match="criterion"):
        BlendConfig(criterion="recall")  # type: ignore[arg-type]


@pytest.mark.parametrize("criterion", ["ndcg@10", "balanced"])
def test_the_rule_picks_the_best_validation_pair_as_the_served_model_scores_it(trained, criterion) -> None:
    data, sequence, learn = trained
    fitted = fit_blend(_fresh(sequence), _fresh(learn), data, replace(GRID, criterion=criterion))
    blend = fitted.model
    counts = item_train_counts(data.train, data.n_items)
    histories, targets = data.history("valid")
    tail = slice_masks(histories, targets, counts, SliceConfig())["long_tail_items"]
    scale = fitted.extra["blend_scale"]
    assert scale == pytest.approx(score_scale(blend.sequence_model, blend.content_model,
                                              list(histories[: GRID.scale_sample_users])), rel=1e-5)
    slow, slow_balanced = {}, {}
    for rho in GRID.weights:
        for beta in GRID.betas:
            blend.set_blend(rho * scale, counts, beta)
            result = evaluate_model(blend.score, histories, targets)
            slow[(rho, beta)] = result.metrics["ndcg@10"]
            slow_balanced[(rho, beta)] = balanced_score(
                result.metrics["ndcg@10"], slice_metrics(result.ranks, {"t": tail})["t"].get("ndcg@10"))
    by_criterion = slow_balanced if criterion == "balanced" else slow
    chosen = (fitted.extra["blend_weight"], fitted.extra["popularity_beta"])
    assert by_criterion[chosen] == pytest.approx(max(by_criterion.values()))
    for (rho, beta), value in slow.items():
        key = f"rho={rho:g},beta={beta:g}"
        assert fitted.extra["valid_ndcg@10_by_pair"][key] == pytest.approx(value, abs=1e-6)
        assert fitted.extra["balanced_by_pair"][key] == pytest.approx(slow_balanced[(rho, beta)], abs=1e-6)
    assert len({round(value, 6) for value in by_criterion.values()}) > 3, "the grid should change the criterion"
    # The fitted model serves the chosen pair.
    blend.set_blend(chosen[0] * scale, counts, chosen[1])
    assert evaluate_model(blend.score, histories, targets).metrics == pytest.approx(fitted.best_valid)


def test_the_blend_owns_the_offset_and_round_trips_through_a_self_contained_checkpoint(trained, tmp_path) -> None:
    data, sequence, learn = trained
    sequence = _fresh(sequence)
    sequence.set_popularity_adjustment(item_train_counts(data.train, data.n_items), 0.5)
    fitted = fit_blend(sequence, _fresh(learn), data, GRID)
    assert not fitted.model.sequence_model.has_item_bias()  # the sequence model's own offset is not added twice
    saved = save_checkpoint(tmp_path, data.dataset, "blend", fitted.model, data.item_ids, fitted.config,
                            {"best_epoch": 0})
    loaded = load_checkpoint(tmp_path, data.dataset, "blend")
    assert loaded.kind == "blend" and loaded.version == saved.version
    assert isinstance(loaded.model, ScoreBlend) and isinstance(loaded.model.sequence_model, ContentSASRec)
    histories = data.history("test")[0][:50]
    assert torch.equal(loaded.model.score(histories), fitted.model.score(histories))
    assert float(loaded.model.content_weight) == float(fitted.model.content_weight)


def test_published_vectors_rank_exactly_as_the_served_blend(trained) -> None:
    data, sequence, learn = trained
    fitted = fit_blend(_fresh(sequence), _fresh(learn), data,
                       BlendConfig(weights=(1.0,), betas=(0.3,)))  # a non-zero weight and offset for sure
    blend = fitted.model
    histories = data.history("test")[0][:40]
    items = item_vectors(blend)
    users = user_vectors(blend, histories)
    assert items.shape[1] == users.shape[1] == 16 + 8 + 1  # sequence width + LEARN width + the offset column
    assert np.allclose(users @ items.T, blend.score(histories)[:, 1:].numpy(), atol=1e-4)
