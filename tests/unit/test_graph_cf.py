"""LightGCN's graph and propagation (ml/models/graph_cf.py) against hand-computed dense matrices."""

import math

import numpy as np
import pytest
import torch

from ml.models.graph_cf import GCCF, LightGCN, SimGCL, normalized_adjacency, train_edges

# 2 users, 3 items: u0-i1, u0-i2, u1-i2, u1-i3 (item indices are 1-based; node of item i = 2 + i - 1).
USERS = np.array([0, 0, 1, 1])
ITEMS = np.array([1, 2, 2, 3])


def test_adjacency_is_the_hand_computed_symmetric_normalization() -> None:
    """Degrees u0 2, u1 2, i1 1, i2 2, i3 1: entries 1/sqrt(deg_u * deg_i), symmetric, zero elsewhere."""
    dense = normalized_adjacency(2, 3, USERS, ITEMS).to_dense()
    expected = torch.zeros(5, 5)
    for user, node, value in [(0, 2, 1 / math.sqrt(2)), (0, 3, 0.5), (1, 3, 0.5), (1, 4, 1 / math.sqrt(2))]:
        expected[user, node] = expected[node, user] = value
    torch.testing.assert_close(dense, expected)


def test_a_repeated_interaction_counts_once() -> None:
    repeated = normalized_adjacency(2, 3, np.append(USERS, 0), np.append(ITEMS, 1)).to_dense()
    torch.testing.assert_close(repeated, normalized_adjacency(2, 3, USERS, ITEMS).to_dense())


def test_propagation_is_the_mean_of_the_dense_layer_powers() -> None:
    torch.manual_seed(0)
    model = LightGCN(n_users=2, n_items=3, dim=4, n_layers=2)
    adjacency = normalized_adjacency(2, 3, USERS, ITEMS)
    ego = model.embedding.weight.detach()
    dense = adjacency.to_dense()
    expected = (ego + dense @ ego + dense @ dense @ ego) / 3
    torch.testing.assert_close(model.propagate(adjacency).detach(), expected)
    users, items = model.split(expected)
    scores = model.score_users(expected, torch.tensor([1, 0]))
    assert scores.shape == (2, 4) and torch.isinf(scores[:, 0]).all()
    torch.testing.assert_close(scores[:, 1:], torch.stack([users[1] @ items.T, users[0] @ items.T]))


def test_gccf_concatenates_the_layers_of_the_self_looped_graph() -> None:
    """GCCF: A + I normalized by degrees that count the self-loop, layers 0..L concatenated (width dim x 3)."""
    torch.manual_seed(0)
    model = GCCF(n_users=2, n_items=3, dim=4, n_layers=2)
    adjacency = model.graph(USERS, ITEMS)
    a = torch.zeros(5, 5)
    for user, item in zip(USERS, ITEMS, strict=True):
        a[user, 2 + item - 1] = a[2 + item - 1, user] = 1
    a += torch.eye(5)
    inverse_sqrt = a.sum(1).pow(-0.5)
    expected_adjacency = inverse_sqrt[:, None] * a * inverse_sqrt[None, :]
    torch.testing.assert_close(adjacency.to_dense(), expected_adjacency)
    ego = model.embedding.weight.detach()
    expected = torch.cat([ego, expected_adjacency @ ego, expected_adjacency @ expected_adjacency @ ego], dim=1)
    torch.testing.assert_close(model.propagate(adjacency).detach(), expected)
    assert model.output_dim == 12


def test_simgcl_averages_layers_one_to_l_and_perturbs_within_the_orthant() -> None:
    torch.manual_seed(0)
    model = SimGCL(n_users=2, n_items=3, dim=4, n_layers=2, noise_eps=0.1)
    adjacency = model.graph(USERS, ITEMS)
    dense = adjacency.to_dense()
    ego = model.embedding.weight.detach()
    torch.testing.assert_close(model.propagate(adjacency).detach(), (dense @ ego + dense @ dense @ ego) / 2)
    clean = model.layers(adjacency)
    noisy = model.layers(adjacency, noise=torch.Generator().manual_seed(1))
    torch.testing.assert_close(noisy[0], clean[0])  # the input layer is never perturbed
    first_noise = (noisy[1] - dense @ ego).detach()
    torch.testing.assert_close(first_noise.norm(dim=1), torch.full((5,), 0.1))  # each row's noise has norm eps
    same_orthant = (first_noise * torch.sign(dense @ ego)) >= 0
    assert same_orthant.all()
    loss = model.auxiliary_loss(adjacency, torch.tensor([0, 1]), torch.tensor([1, 2, 3]),
                                torch.Generator().manual_seed(2))
    assert loss.item() > 0 and loss.requires_grad


def test_the_graph_holds_only_training_edges() -> None:
    """Validation and test targets that are not in the user's training sequence never become edges."""
    train = [np.array([1, 2, 1]), np.array([2])]
    valid_targets, test_targets = np.array([3, 1]), np.array([1, 3])
    users, items = train_edges(train)
    assert sorted(zip(users.tolist(), items.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]
    dense = normalized_adjacency(2, 3, users, items).to_dense()
    held_out = [(user, int(item)) for targets in (valid_targets, test_targets) for user, item in enumerate(targets)
                if item not in train[user]]
    assert held_out == [(0, 3), (1, 1), (1, 3)]
    for user, item in held_out:
        assert dense[user, 2 + item - 1] == 0 and dense[2 + item - 1, user] == 0
    assert (dense > 0).sum() == 2 * 3  # the three training pairs, both directions


def test_bad_indices_fail_clearly() -> None:
    with pytest.raises(ValueError, match="item indices outside"):
        normalized_adjacency(2, 3, np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="user rows outside"):
        normalized_adjacency(2, 3, np.array([2]), np.array([1]))


def test_bpr_training_lowers_the_loss(one_torch_thread: None) -> None:
    """A few Adam steps of BPR on a tiny graph: the loss falls and positives end up above negatives."""
    torch.manual_seed(0)
    model = LightGCN(n_users=2, n_items=3, dim=8, n_layers=2)
    adjacency = normalized_adjacency(2, 3, USERS, ITEMS)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    users, positives, negatives = torch.tensor([0, 1]), torch.tensor([1, 3]), torch.tensor([3, 1])
    losses = []
    for _ in range(60):
        loss = model.bpr_loss(model.propagate(adjacency), users, positives, negatives, l2=1e-4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    scores = model.score_users(model.propagate(adjacency), users)
    assert scores[0, 1] > scores[0, 3] and scores[1, 3] > scores[1, 1]
