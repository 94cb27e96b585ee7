"""SASRec: shapes, causality, padding invariance, deterministic training, and learning a simple pattern."""


import numpy as np
import pytest
import torch

from ml.data.sequences import SequenceData
from ml.evaluate.ranking import evaluate_model
from ml.models.sasrec import SASRec, SASRecConfig, left_pad
from ml.train.sasrec_training import train_sasrec, training_pairs

SMALL = SASRecConfig(hidden_dim=32, n_layers=2, n_heads=2, max_len=20, dropout=0.1, lr=3e-3, batch_size=32,
                     eval_batch_size=64, max_epochs=4, patience=4, eval_every=1, device="cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cycle_data(n_items: int = 30, n_users: int = 200, seed: int = 0) -> SequenceData:
    """Every user walks the cycle 1 -> 2 -> ... -> n_items -> 1 from a random start: the next item is learnable."""
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for _ in range(n_users):
        start, length = rng.integers(0, n_items), rng.integers(6, 15)
        seq = (start + np.arange(length)) % n_items + 1
        train.append(seq[:-2].astype(np.int64))
        valid.append(seq[-2])
        test.append(seq[-1])
    return SequenceData(
        dataset="cycle", item_ids=[f"i{i:02d}" for i in range(n_items)], user_ids=[f"u{u:03d}" for u in range(n_users)],
        train=train, valid_targets=np.array(valid, dtype=np.int64), test_targets=np.array(test, dtype=np.int64),
    )


def test_left_pad_keeps_the_most_recent_items_right_aligned() -> None:
    padded = left_pad([np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([], dtype=np.int64)], max_len=3)
    assert padded.tolist() == [[3, 4, 5], [0, 0, 7], [0, 0, 0]]
    assert left_pad([np.array([4])], max_len=50).tolist() == [[4]]


def test_training_pairs_shift_by_one_and_skip_short_sequences() -> None:
    inputs, targets = training_pairs([np.array([1, 2, 3]), np.array([5]), np.array([1, 2, 3, 4, 5, 6])], max_len=4)
    assert inputs.tolist() == [[0, 0, 1, 2], [2, 3, 4, 5]]
    assert targets.tolist() == [[0, 0, 2, 3], [3, 4, 5, 6]]


def test_output_shapes() -> None:
    torch.manual_seed(0)
    model = SASRec(n_items=12, config=SMALL).eval()
    hidden = model(torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]]))
    assert hidden.shape == (2, 4, 32)
    assert model.item_logits(hidden).shape == (2, 4, 12)
    scores = model.score([np.array([3, 4]), np.array([1]), np.arange(1, 13)])
    assert scores.shape == (3, 13) and torch.isfinite(scores).all()
    assert not model.training


def test_attention_is_causal() -> None:
    torch.manual_seed(0)
    model = SASRec(n_items=12, config=SMALL).eval()
    sequence = torch.tensor([[0, 0, 5, 6, 7, 8]])
    changed_last = sequence.clone()
    changed_last[0, -1] = 2
    with torch.no_grad():
        before, after = model(sequence), model(changed_last)
    torch.testing.assert_close(before[:, :-1], after[:, :-1])
    assert not torch.allclose(before[:, -1], after[:, -1])
    changed_first = sequence.clone()
    changed_first[0, 2] = 2
    with torch.no_grad():
        assert not torch.allclose(model(changed_first)[:, -1], before[:, -1])  # later positions do see earlier ones


def test_scores_do_not_depend_on_batch_padding() -> None:
    torch.manual_seed(0)
    model = SASRec(n_items=12, config=SMALL)
    short = np.array([3, 9, 4])
    alone = model.score([short])
    with_longer = model.score([short, np.arange(1, 13)])
    torch.testing.assert_close(alone[0], with_longer[0], rtol=1e-5, atol=1e-5)
    # Histories longer than max_len count only their most recent max_len items.
    long_history = np.r_[np.full(30, 7), np.arange(1, 13)]
    torch.testing.assert_close(model.score([long_history]), model.score([long_history[-SMALL.max_len:]]))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(hidden_dim=30, n_heads=4)
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(dropout=1.0)


def test_training_is_deterministic_for_a_seed() -> None:
    data = _cycle_data(n_users=60)
    config = SASRecConfig(**{**SMALL.__dict__, "max_epochs": 2})
    first, second = train_sasrec(data, config), train_sasrec(data, config)
    assert np.array_equal(first.item_embeddings(), second.item_embeddings())
    assert [r["loss"] for r in first.history] == [r["loss"] for r in second.history]
    other = train_sasrec(data, SASRecConfig(**{**config.__dict__, "seed": 1}))
    assert not np.array_equal(first.item_embeddings(), other.item_embeddings())


def test_learns_a_cycle_far_above_random_and_keeps_the_best_epoch() -> None:
    data = _cycle_data()
    epochs: list[int] = []
    result = train_sasrec(data, SMALL, on_epoch=lambda epoch, record: epochs.append(epoch))
    assert epochs == [1, 2, 3, 4] and len(result.history) == 4
    # Random ranking of 30 items puts the target in the top 10 a third of the time.
    assert result.best_valid["recall@10"] > 0.9
    assert result.best_valid["ndcg@10"] == max(r["valid_ndcg@10"] for r in result.history)
    best = result.history[result.best_epoch - 1]
    assert best["valid_ndcg@10"] == result.best_valid["ndcg@10"]
    # The returned model carries the best epoch's weights, in eval mode.
    assert not result.model.training
    again = evaluate_model(result.model.score, *data.history("valid"), batch_size=SMALL.eval_batch_size)
    assert again.metrics["ndcg@10"] == pytest.approx(result.best_valid["ndcg@10"])
    embeddings = result.item_embeddings()
    assert embeddings.shape == (30, 32) and embeddings.dtype == np.float32
    test = evaluate_model(result.model.score, *data.history("test"))
    assert test.metrics["recall@10"] > 0.9


def test_bucketed_batches_cover_every_row_once_with_similar_lengths() -> None:
    from ml.train.sasrec_training import bucketed_batches

    lengths = torch.randint(1, 50, (1000,), generator=torch.Generator().manual_seed(1))
    batches = bucketed_batches(lengths, 10, torch.Generator().manual_seed(0), bucket_batches=10)
    rows = torch.cat(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    assert all(len(batch) == 10 for batch in batches)
    # Sorting inside buckets makes batches much narrower than the longest sequence overall.
    widths = torch.tensor([int(lengths[batch].max()) for batch in batches], dtype=torch.float32)
    assert widths.mean() < 0.8 * float(lengths.max())
    again = bucketed_batches(lengths, 10, torch.Generator().manual_seed(0), bucket_batches=10)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


@pytest.mark.parametrize(("n_rows", "batch_size", "bucket_batches"), [(1000, 10, 10), (1003, 10, 10), (7, 4, 32),
                                                                      (22363, 128, 32), (0, 8, 2)])
def test_batches_per_epoch_counts_what_bucketing_cuts(n_rows: int, batch_size: int, bucket_batches: int) -> None:
    from ml.train.sasrec_training import batches_per_epoch, bucketed_batches

    cut = bucketed_batches(torch.ones(n_rows), batch_size, torch.Generator().manual_seed(0), bucket_batches)
    assert batches_per_epoch(n_rows, batch_size, bucket_batches) == len(cut)


def test_cosine_schedule_decays_the_learning_rate_to_zero_by_the_last_epoch() -> None:
    rng = np.random.default_rng(0)
    data = SequenceData(dataset="toy", item_ids=[str(i) for i in range(20)], user_ids=[str(u) for u in range(40)],
                        train=[rng.integers(1, 21, size=6) for _ in range(40)],
                        valid_targets=rng.integers(1, 21, size=40), test_targets=rng.integers(1, 21, size=40))
    config = SASRecConfig(hidden_dim=8, n_layers=1, n_heads=1, max_len=8, batch_size=16, max_epochs=3, patience=3,
                          lr_schedule="cosine", lr=1e-2)
    lrs = [record["lr"] for record in train_sasrec(data, config).history]
    assert lrs[0] < 1e-2 and lrs[1] < lrs[0] and lrs[2] == pytest.approx(0.0, abs=1e-12)
    constant = train_sasrec(data, SASRecConfig(**{**config.__dict__, "lr_schedule": "constant"}))
    assert [record["lr"] for record in constant.history] == [1e-2] * 3
    with pytest.raises(ValueError, match="lr_schedule"):
        SASRecConfig(lr_schedule="step")  # type: ignore[arg-type]


@pytest.mark.parametrize("n_heads", [1, 2])
def test_train_and_eval_mode_agree_at_dropout_zero(n_heads: int) -> None:
    """Eval mode may take PyTorch's fused encoder path (never used in training): it must compute the same."""
    torch.manual_seed(0)
    config = SASRecConfig(hidden_dim=16, n_layers=2, n_heads=n_heads, max_len=8, dropout=0.0)
    model = SASRec(n_items=20, config=config)
    inputs = torch.tensor([[0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9]])
    real = inputs != 0
    with torch.no_grad():
        trained = model.train()(inputs)
        evaluated = model.eval()(inputs)
    torch.testing.assert_close(trained[real], evaluated[real], rtol=1e-5, atol=1e-5)
    histories = [np.array([3, 4, 5]), np.array([1, 2, 3, 4, 5, 6]), np.array([9])]
    model.train()
    with torch.no_grad():
        train_scores = model.user_embedding(histories) @ model.item_table().T
    torch.testing.assert_close(train_scores, model.score(histories), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("batch_size", "bucket_batches", "batching"), [
    (4, 1, "users"), (4, 8, "users"), (7, 3, "users"), (64, 1, "users"), (4, 8, "positions"), (3, 1, "positions")])
def test_every_real_position_weighs_the_same_whatever_the_batching(batch_size: int, bucket_batches: int,
                                                                    batching: str) -> None:
    """Summed over an epoch's batches, the loss is (batches x) the mean over all positions: batching only regroups."""
    from ml.train.sasrec_training import batch_loss, epoch_batches

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # Very unequal lengths, as in leave-one-out data: many 2-3 item users, a few long ones.
    train = [rng.integers(1, 21, size=int(length)) for length in rng.choice([2, 3, 3, 4, 30], size=40)]
    inputs, targets = training_pairs(train, max_len=12)
    model = SASRec(n_items=20, config=SASRecConfig(hidden_dim=8, n_layers=1, max_len=12, dropout=0.0)).eval()
    lengths = (targets != 0).sum(dim=1)
    config = SASRecConfig(batch_size=batch_size, bucket_batches=bucket_batches, batching=batching)  # type: ignore[arg-type]
    batches = epoch_batches(lengths, config, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(len(lengths)))
    per_batch = float(lengths.sum()) / len(batches)
    with torch.no_grad():
        epoch = sum(float(batch_loss(model, inputs[rows], targets[rows], per_batch)[0]) for rows in batches)
        real = targets != 0
        every_position = torch.nn.functional.cross_entropy(model.item_logits(model(inputs)[real]), targets[real] - 1)
    assert epoch == pytest.approx(len(batches) * float(every_position), rel=1e-5)
    assert sum(int(batch_loss(model, inputs[rows], targets[rows], per_batch)[1]) for rows in batches) == real.sum()


def test_a_per_batch_mean_would_overweight_short_sequences() -> None:
    """The bias this loss removes: with length-sorted batches, per-batch means favour the short users."""
    from ml.train.sasrec_training import bucketed_batches

    rng = np.random.default_rng(0)
    lengths = torch.from_numpy(rng.choice([1, 2, 3, 10, 40], size=512))
    batches = bucketed_batches(lengths, 32, torch.Generator().manual_seed(0), bucket_batches=16)
    # A per-batch mean gives each batch weight 1 / n_batches, shared by its positions.
    weight_by_mean = torch.zeros(len(lengths), dtype=torch.float64)
    for rows in batches:
        weight_by_mean[rows] = 1.0 / len(batches) / float(lengths[rows].sum())
    short = lengths <= 3
    short_share_of_gradient = float((weight_by_mean * lengths)[short].sum())
    short_share_of_positions = float(lengths[short].sum() / lengths.sum())
    assert short_share_of_gradient > 2 * short_share_of_positions


def test_position_batches_hold_about_the_same_positions_with_little_padding() -> None:
    from ml.train.sasrec_training import bucketed_batches, position_batches

    lengths = torch.from_numpy(np.random.default_rng(0).choice([1, 2, 3, 5, 10, 49], size=5000))
    budget = 64 * float(lengths.double().mean())
    batches = position_batches(lengths, budget, torch.Generator().manual_seed(0), bucket_batches=8)
    assert sorted(torch.cat(batches).tolist()) == list(range(5000))
    positions = np.array([int(lengths[rows].sum()) for rows in batches])
    # As many steps as 64-user batches would take, each (but a bucket's last) within one row of the budget.
    assert abs(len(batches) - 5000 / 64) <= 8
    assert (positions <= budget + 49).all() and np.median(positions) >= 0.95 * budget
    # Computed width x rows barely exceeds the real positions; shuffled user batches are mostly padding.
    computed = sum(len(rows) * int(lengths[rows].max()) for rows in batches)
    shuffled = bucketed_batches(lengths, 64, torch.Generator().manual_seed(0), bucket_batches=1)
    assert computed < 1.4 * int(lengths.sum()) < 0.5 * sum(len(rows) * int(lengths[rows].max()) for rows in shuffled)
    again = position_batches(lengths, budget, torch.Generator().manual_seed(0), bucket_batches=8)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
