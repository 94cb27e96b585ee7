"""LEARN's sampling (split, position weights, two stages) and dense all-action loss, against hand values."""

import math

import numpy as np
import pytest
import torch

from ml.models.learn import LEARNConfig
from ml.train.learn_loss import (
    dense_all_action_loss,
    make_example,
    position_weights,
    split_sequence,
    uniform_subsample,
    weighted_positions,
)
from ml.train.learn_training import item_log_frequency


def test_position_weights_match_the_formula_by_hand() -> None:
    assert position_weights(1).tolist() == [1.0]
    # N = 3: w = log(10), log(10 + 9990 / 2) = log(5005), log(10000); divided by log(10000).
    expected = np.array([math.log(10), math.log(5005), math.log(10000)]) / math.log(10000)
    np.testing.assert_allclose(position_weights(3), expected)
    assert position_weights(3)[0] == pytest.approx(0.25)
    weights = position_weights(50)
    assert weights.max() == 1.0 and weights[-1] == 1.0 and (np.diff(weights) > 0).all()  # recent weighs more
    np.testing.assert_allclose(position_weights(4, alpha=2.0, beta=8.0), np.log([2.0, 4.0, 6.0, 8.0]) / np.log(8.0))
    np.testing.assert_allclose(position_weights(5, alpha=3.0, beta=3.0), np.ones(5))
    with pytest.raises(ValueError):
        position_weights(0)
    with pytest.raises(ValueError):
        position_weights(3, alpha=1.0)


def test_split_sequence_cuts_uniformly_into_two_non_empty_parts() -> None:
    rng = np.random.default_rng(0)
    seq = np.arange(1, 6)
    cuts = []
    for _ in range(2000):
        history, target = split_sequence(seq, rng)
        assert len(history) >= 1 and len(target) >= 1
        assert np.array_equal(np.r_[history, target], seq)
        cuts.append(len(history))
    counts = np.bincount(cuts, minlength=5)[1:]
    assert counts.sum() == 2000 and (np.abs(counts - 500) < 80).all()  # each of the 4 cut points ~1/4
    assert [part.tolist() for part in split_sequence(np.array([4, 9]), rng)] == [[4], [9]]
    with pytest.raises(ValueError, match="two items"):
        split_sequence(np.array([3]), rng)


def test_uniform_subsample_keeps_order_and_caps_length() -> None:
    rng = np.random.default_rng(0)
    items = np.arange(100, 130)
    short = np.array([5, 3, 8])
    assert uniform_subsample(short, 5, rng) is short
    picked = uniform_subsample(items, 10, rng)
    assert len(picked) == 10 and (np.diff(picked) > 0).all() and set(picked) <= set(items)
    # Uniform: over many draws the oldest and most recent items are kept about equally often.
    firsts = sum(int(100 in uniform_subsample(items, 10, rng)) for _ in range(3000))
    lasts = sum(int(129 in uniform_subsample(items, 10, rng)) for _ in range(3000))
    assert abs(firsts - 1000) < 120 and abs(lasts - 1000) < 120


def test_weighted_positions_prefer_recent_items_without_replacement() -> None:
    rng = np.random.default_rng(0)
    assert weighted_positions(4, 10, rng).tolist() == [0, 1, 2, 3]
    counts = np.zeros(40)
    for _ in range(3000):
        picked = weighted_positions(40, 10, rng)
        assert len(picked) == len(set(picked.tolist())) == 10 and (np.diff(picked) > 0).all()
        counts[picked] += 1
    assert counts[-1] > 1.5 * counts[0]  # weight 1 vs 1/4, less after drawing without replacement
    assert counts[-10:].sum() > counts[:10].sum()


def test_make_example_uses_every_position_without_sampling() -> None:
    rng = np.random.default_rng(0)
    config = LEARNConfig.cpu_default(max_len=6, target_span="rest")
    seq = np.arange(1, 21)
    for _ in range(50):
        example = make_example(seq, rng, config)
        # Only the most recent max_len items, cut in two, every position in the loss.
        assert np.array_equal(np.r_[example.history, example.target], seq[-6:])
        assert example.history_positions.tolist() == list(range(len(example.history)))
        assert example.target_positions.tolist() == list(range(len(example.target)))


@pytest.mark.parametrize("sampling", [False, True])
def test_a_next_item_target_is_the_one_item_after_the_split(sampling: bool) -> None:
    rng = np.random.default_rng(0)
    config = LEARNConfig.cpu_default(max_len=8, target_span="next", sampling=sampling, history_cap=8, target_cap=8)
    seq = np.arange(1, 31)
    lengths = set()
    for _ in range(200):
        example = make_example(seq, rng, config)
        assert len(example.target) == 1 and example.target_positions.tolist() == [0]
        # The target is the item right after the last history item (sampling may thin the history out).
        assert example.target[0] == example.history[-1] + 1 or sampling
        assert example.history.max() < example.target[0]
        lengths.add(len(example.history))
    assert len(lengths) > 3  # the split point still moves
    with pytest.raises(ValueError, match="target_span"):
        LEARNConfig.cpu_default(target_span="all")


def test_make_example_samples_in_two_stages() -> None:
    rng = np.random.default_rng(0)
    config = LEARNConfig.cpu_default(sampling=True, max_len=12, history_cap=12, target_cap=6, n_history_samples=4,
                                     n_target_samples=3, target_span="rest")
    seq = np.arange(1, 201)
    for _ in range(50):
        example = make_example(seq, rng, config)
        assert 1 <= len(example.history) <= 12 and 1 <= len(example.target) <= 6
        # The first stage reads the whole sequence and keeps the order; history items precede target items.
        assert (np.diff(example.history) > 0).all() and (np.diff(example.target) > 0).all()
        assert example.history.max() < example.target.min()
        assert len(example.history_positions) == min(4, len(example.history))
        assert len(example.target_positions) == min(3, len(example.target))
        assert example.history_positions.max() < len(example.history)


def _zeros(n_users: int, width: int) -> torch.Tensor:
    return torch.zeros(n_users, width, 4)


def test_pair_counts_with_equal_logits() -> None:
    # All embeddings zero: every logit is 0, so loss(b, h, t) = log(1 + |Neg(b)|).
    user_mask = torch.tensor([[True, True, True], [True, False, False]])
    item_mask = torch.tensor([[True, True], [True, False]])
    ids = torch.tensor([[1, 2], [3, 0]])
    loss = dense_all_action_loss(_zeros(2, 3), user_mask, _zeros(2, 2), item_mask, ids, 0.05)
    # User 0: 3 x 2 = 6 pairs against 1 negative (user 1's item); user 1: 1 x 1 pair against 2 negatives.
    assert float(loss) == pytest.approx((6 * math.log(2) + math.log(3)) / 7, rel=1e-6)


def test_false_negatives_are_masked() -> None:
    user_mask = torch.ones(3, 1, dtype=torch.bool)
    item_mask = torch.ones(3, 1, dtype=torch.bool)
    ids = torch.tensor([[5], [5], [7]])
    # Equal logits: users 0 and 1 share item 5, so each has only user 2's item as a negative; user 2 has both.
    loss = dense_all_action_loss(_zeros(3, 1), user_mask, _zeros(3, 1), item_mask, ids, 1.0)
    assert float(loss) == pytest.approx((2 * math.log(2) + math.log(3)) / 3, rel=1e-6)

    # With real embeddings, user 0's loss ignores user 1's copy of item 5 however close it is.
    torch.manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(3, 1, 4), dim=-1)
    items = torch.nn.functional.normalize(torch.randn(3, 1, 4), dim=-1)
    items[1, 0] = users[0, 0]  # the strongest possible "negative" for user 0
    tau = 0.1
    s = torch.einsum("bd,cd->bc", users[:, 0], items[:, 0]) / tau
    by_hand = [
        -s[0, 0] + torch.logaddexp(s[0, 0], s[0, 2]),
        -s[1, 1] + torch.logaddexp(s[1, 1], s[1, 2]),
        -s[2, 2] + torch.logsumexp(s[2], dim=0),
    ]
    loss = dense_all_action_loss(users, user_mask, items, item_mask, ids, tau)
    assert float(loss) == pytest.approx(float(sum(by_hand) / 3), rel=1e-5)


def test_all_of_a_users_targets_are_excluded_from_its_negatives() -> None:
    # User 1's target 8 is also one of user 0's targets: it is not a negative of user 0 (nor of user 1).
    user_mask = torch.ones(2, 1, dtype=torch.bool)
    item_mask = torch.tensor([[True, True], [True, False]])
    ids = torch.tensor([[4, 8], [8, 0]])
    loss = dense_all_action_loss(_zeros(2, 1), user_mask, _zeros(2, 2), item_mask, ids, 1.0)
    # User 0's negatives: none (loss 0 for its 2 pairs); user 1's: item 4 only (log 2 for its pair).
    assert float(loss) == pytest.approx(math.log(2) / 3, rel=1e-6)


def test_tiny_case_by_hand() -> None:
    users = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    items = torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    tau = 0.5
    # User 0: s+ = 1 / 0.5 = 2, s- = 0.6 / 0.5 = 1.2; user 1: s+ = 0.8 / 0.5 = 1.6, s- = 0.
    expected = (math.log(1 + math.exp(1.2 - 2)) + math.log(1 + math.exp(0 - 1.6))) / 2
    loss = dense_all_action_loss(users, mask, items, mask, torch.tensor([[1], [2]]), tau)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # A learnable temperature gets a gradient.
    temperature = torch.tensor(tau, requires_grad=True)
    dense_all_action_loss(users, mask, items, mask, torch.tensor([[1], [2]]), temperature).backward()
    assert temperature.grad is not None and torch.isfinite(temperature.grad)


def test_masked_out_positions_do_not_matter_and_gradients_stay_finite() -> None:
    torch.manual_seed(1)
    users, items = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    user_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    item_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    ids = torch.arange(1, 16).reshape(3, 5)
    loss = dense_all_action_loss(users, user_mask, items, item_mask, ids, 0.1)
    noisy_users, noisy_items = users.clone(), items.clone()
    noisy_users[~user_mask] = 100.0
    noisy_items[~item_mask] = -100.0
    noisy_ids = ids.masked_fill(~item_mask, 1)  # padding ids equal to a real target must not mask anything
    assert float(dense_all_action_loss(noisy_users, user_mask, noisy_items, item_mask, noisy_ids, 0.1)) == (
        pytest.approx(float(loss), rel=1e-6))
    # One user alone has no negative at all: loss 0, finite gradients.
    alone = users[:1].clone().requires_grad_(True)
    single = dense_all_action_loss(alone, user_mask[:1], items[:1], item_mask[:1], ids[:1], 0.1)
    single.backward()
    assert float(single.detach()) == 0.0 and torch.isfinite(alone.grad).all()
    with pytest.raises(ValueError, match="no .* pair"):
        dense_all_action_loss(users, torch.zeros_like(user_mask), items, item_mask, ids, 0.1)


def test_logq_correction_subtracts_log_q_from_every_logit() -> None:
    # Two users, one position and one target each, 2-d embeddings; tau = 1 so logits are dot products.
    user = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    item = torch.tensor([[[0.8, 0.6]], [[0.6, 0.8]]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    ids = torch.tensor([[1], [2]])
    plain = dense_all_action_loss(user, mask, item, mask, ids, 1.0)
    # A constant log q shifts every logit alike: the softmax, and so the loss, is unchanged.
    shifted = dense_all_action_loss(user, mask, item, mask, ids, 1.0, torch.full((2, 1), -3.0))
    torch.testing.assert_close(shifted, plain)
    # By hand: user 0's positive is item 1 (0.8 - log q1), its negative item 2 (0.6 - log q2); user 1 mirrored.
    log_q = torch.tensor([[math.log(0.9)], [math.log(0.1)]])
    corrected = dense_all_action_loss(user, mask, item, mask, ids, 1.0, log_q)
    pos0, neg0 = 0.8 - math.log(0.9), 0.6 - math.log(0.1)
    pos1, neg1 = 0.8 - math.log(0.1), 0.6 - math.log(0.9)
    expected = (-pos0 + math.log(math.exp(pos0) + math.exp(neg0)) - pos1 + math.log(math.exp(pos1) + math.exp(neg1))) / 2
    assert float(corrected) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="target_log_q"):
        dense_all_action_loss(user, mask, item, mask, ids, 1.0, torch.zeros(2, 2))


def test_item_log_frequency_is_a_smoothed_log_share() -> None:
    log_q = item_log_frequency([np.array([1, 1, 2]), np.array([1])], 3).numpy()
    # Counts + 1: item1 4, item2 2, item3 1 -> shares 4/7, 2/7, 1/7.
    np.testing.assert_allclose(np.exp(log_q[1:]), [4 / 7, 2 / 7, 1 / 7], rtol=1e-6)
