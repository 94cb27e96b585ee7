"""The post-hoc popularity adjustment: served scores, the validation rule, checkpoints and the published vectors."""

import numpy as np
import pytest
import torch

from ml.data.sequences import SequenceData
from ml.evaluate.ranking import evaluate_model
from ml.evaluate.slices import SliceConfig, item_train_counts, slice_masks, slice_metrics
from ml.models.checkpoints import MODEL_FILE, item_vectors, load_checkpoint, save_checkpoint, user_vectors
from ml.models.content_sasrec import ContentSASRec, ContentSASRecConfig
from ml.models.registry import rebuild
from ml.models.sasrec import SASRec, SASRecConfig
from ml.train.content_sasrec_training import train_content_sasrec
from ml.train.popularity_adjustment import balanced_score, choose_popularity_adjustment
from ml.train.sasrec_training import train_sasrec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = SASRecConfig(hidden_dim=16, n_layers=1, n_heads=1, max_len=10, dropout=0.1, lr=5e-3, batch_size=32,
                     max_epochs=3, patience=3, eval_every=1, device="cpu")


def _skewed_data(n_items: int = 40, n_users: int = 240, seed: int = 0) -> SequenceData:
    """Users mix a few head items with a random tail, so training counts are very uneven."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.2
    weights /= weights.sum()
    train, valid, test = [], [], []
    for _ in range(n_users):
        seq = rng.choice(n_items, size=int(rng.integers(5, 12)), p=weights) + 1
        train.append(seq[:-2].astype(np.int64))
        valid.append(seq[-2])
        test.append(seq[-1])
    return SequenceData(dataset="skewed", item_ids=[f"i{i:02d}" for i in range(n_items)],
                        user_ids=[f"u{u:03d}" for u in range(n_users)], train=train,
                        valid_targets=np.array(valid, dtype=np.int64), test_targets=np.array(test, dtype=np.int64))


def test_served_score_is_the_raw_score_minus_beta_log_one_plus_count() -> None:
    torch.manual_seed(0)
    model = SASRec(6, SMALL).eval()
    histories = [np.array([1, 2]), np.array([3])]
    raw = model.score(histories)
    counts = np.array([0, 10, 0, 3, 1, 100, 7])
    model.set_popularity_adjustment(counts, 0.3)
    adjusted = model.score(histories)
    expected = raw - 0.3 * torch.log1p(torch.as_tensor(counts, dtype=torch.float32))
    expected[:, 0] = raw[:, 0]  # the padding column is never ranked and never shifted
    assert torch.allclose(adjusted, expected, atol=1e-6)
    assert model.has_item_bias()
    model.set_popularity_adjustment(counts, 0.0)
    assert torch.equal(model.score(histories), raw) and not model.has_item_bias()


def test_bad_adjustments_are_refused() -> None:
    model = SASRec(3, SMALL)
    with pytest.raises(ValueError, match="training counts"):
        model.set_popularity_adjustment(np.array([0, 1, 2]), 0.1)  # one count short
    with pytest.raises(ValueError, match="beta"):
        model.set_popularity_adjustment(np.array([0, 1, 2, 3]), -0.1)
    with pytest.raises(ValueError, match="popularity_betas"):
        SASRecConfig(popularity_betas=())
    with pytest.raises(ValueError, match="popularity_adjustment"):
        SASRecConfig(popularity_adjustment="always")  # type: ignore[arg-type]


def test_balanced_score_is_the_mean_of_all_and_long_tail_or_all_alone() -> None:
    assert balanced_score(0.10, 0.04) == pytest.approx(0.07)
    assert balanced_score(0.10, None) == 0.10


def _balanced_by_model_score(model: SASRec, data: SequenceData, beta: float) -> float:
    """The rule's criterion computed the slow way, through `model.score` (what is served)."""
    counts = item_train_counts(data.train, data.n_items)
    model.set_popularity_adjustment(counts, beta)
    histories, targets = data.history("valid")
    result = evaluate_model(model.score, histories, targets)
    tail = slice_masks(histories, targets, counts, SliceConfig())["long_tail_items"]
    return balanced_score(result.metrics["ndcg@10"],
                          slice_metrics(result.ranks, {"tail": tail})["tail"].get("ndcg@10"))


def test_the_rule_picks_the_best_balanced_beta_as_served_and_leaves_it_set() -> None:
    data = _skewed_data()
    model = train_sasrec(data, SMALL).model
    betas = (0.0, 0.5, 1.0, 2.0, 4.0)
    choice = choose_popularity_adjustment(model, data, betas)
    slow = {beta: _balanced_by_model_score(model, data, beta) for beta in betas}
    assert choice.balanced == pytest.approx(slow, abs=1e-9)
    assert choice.beta == max(betas, key=lambda beta: (slow[beta], -beta))
    # The model is left with the chosen beta set, and its validation metrics are the served ones.
    model.set_popularity_adjustment(item_train_counts(data.train, data.n_items), choice.beta)
    served = evaluate_model(model.score, *data.history("valid")).metrics
    assert choice.valid == pytest.approx(served)
    # Distinct betas really change the ranking on this skewed catalogue (the test would be vacuous otherwise).
    assert len({round(value, 9) for value in slow.values()}) > 1


def test_only_beta_zero_in_the_grid_means_no_adjustment() -> None:
    data = _skewed_data()
    model = train_sasrec(data, SMALL).model
    assert choose_popularity_adjustment(model, data, [0.0]).beta == 0.0
    assert not model.has_item_bias()


def test_content_sasrec_trains_with_the_balanced_rule_by_default_and_sasrec_without() -> None:
    data = _skewed_data()
    content = np.random.default_rng(1).normal(size=(data.n_items, 8)).astype(np.float32)
    small = {key: getattr(SMALL, key) for key in ("hidden_dim", "n_layers", "n_heads", "max_len", "dropout", "lr",
                                                   "batch_size", "max_epochs", "patience", "eval_every", "device")}
    result = train_content_sasrec(data, content, ContentSASRecConfig(**small, fusion="dual",
                                                                     popularity_betas=(0.0, 1.0, 3.0)))
    assert set(result.extra["balanced_valid_ndcg@10"]) == {"0", "1", "3"}
    beta = result.extra["popularity_beta"]
    assert beta in (0.0, 1.0, 3.0)
    served = evaluate_model(result.model.score, *data.history("valid")).metrics
    assert result.best_valid == pytest.approx(served)
    assert "valid_unadjusted" in result.extra
    plain = train_sasrec(data, SMALL)
    assert plain.extra == {} and not plain.model.has_item_bias()


def test_checkpoint_keeps_the_adjustment_and_older_checkpoints_load_without_one(tmp_path) -> None:
    torch.manual_seed(0)
    content = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    config = ContentSASRecConfig(hidden_dim=8, n_layers=1, max_len=6, fusion="dual", device="cpu")
    model = ContentSASRec(content, config).eval()
    model.set_popularity_adjustment(np.arange(9), 0.2)
    ids = [f"i{i}" for i in range(8)]
    saved = save_checkpoint(tmp_path, "d", "content_sasrec", model, ids, config, {})
    loaded = load_checkpoint(tmp_path, "d", "content_sasrec", saved.version).model
    histories = [np.array([1, 2, 3]), np.array([5])]
    assert torch.equal(loaded.score(histories), model.score(histories))
    # A checkpoint written before the adjustment existed has no item_bias: it serves raw scores.
    payload = torch.load(saved.path / MODEL_FILE, weights_only=True)
    del payload["state_dict"]["item_bias"]
    old = rebuild(payload)
    assert not old.has_item_bias()
    model.set_popularity_adjustment(np.arange(9), 0.0)
    assert torch.equal(old.score(histories), model.score(histories))


def test_published_vectors_rank_exactly_as_the_served_scores() -> None:
    torch.manual_seed(0)
    model = SASRec(10, SMALL).eval()
    model.set_popularity_adjustment(np.array([0, 50, 1, 2, 0, 9, 30, 4, 4, 1, 0]), 0.4)
    histories = [np.array([1, 2, 3]), np.array([7, 7]), np.array([9])]
    items, users = item_vectors(model), user_vectors(model, histories)
    assert items.shape == (10, SMALL.hidden_dim + 1) and users.shape == (3, SMALL.hidden_dim + 1)
    assert np.allclose(users @ items.T, model.score(histories)[:, 1:].numpy(), atol=1e-5)
    # The learned table alone (the behaviour codes read it) has no offset column.
    assert item_vectors(model, served=False).shape == (10, SMALL.hidden_dim)
    model.set_popularity_adjustment(np.zeros(11), 0.0)
    assert item_vectors(model).shape == (10, SMALL.hidden_dim)


def test_the_logit_adjusted_loss_adds_tau_log_one_plus_count_to_the_training_logits_only() -> None:
    from ml.train.sasrec_training import batch_loss

    torch.manual_seed(0)
    model = SASRec(5, SMALL).eval()
    inputs, targets = torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[0, 2, 3], [4, 5, 1]])
    offset = 0.7 * torch.log1p(torch.tensor([9.0, 0.0, 3.0, 40.0, 1.0]))
    plain, n = batch_loss(model, inputs, targets, 1.0)
    adjusted, _ = batch_loss(model, inputs, targets, 1.0, offset)
    real = targets != 0
    logits = model.item_logits(model(inputs)[real])
    expected = torch.nn.functional.cross_entropy(logits + offset, targets[real] - 1, reduction="sum")
    assert n == 5 and torch.allclose(adjusted, expected) and not torch.allclose(adjusted, plain)
    with pytest.raises(ValueError, match="train_logit_adjustment"):
        SASRecConfig(train_logit_adjustment=-1.0)
