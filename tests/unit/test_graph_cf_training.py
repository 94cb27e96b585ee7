"""LightGCN / RLMRec training (ml/train/graph_cf_training.py) on a tiny two-community graph, on CPU in seconds."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ml.models.graph_cf import LightGCN
from ml.train.graph_cf_training import (
    GraphCFConfig,
    _semantic_tables,
    sample_negatives,
    score_all_users,
    train_graph_cf,
)

N_ITEMS = 10


def two_communities() -> tuple[list[np.ndarray], np.ndarray]:
    """Users 0-9 take 4 of items 1-5, users 10-19 4 of items 6-10; the community's fifth item is the validation target."""
    rng = np.random.default_rng(0)
    train, targets = [], []
    for user in range(20):
        community = np.arange(1, 6) if user < 10 else np.arange(6, 11)
        order = rng.permutation(community)
        train.append(order[:4].astype(np.int64))
        targets.append(order[4])
    return train, np.array(targets, dtype=np.int64)


def quick(variant: str = "base", **overrides: object) -> GraphCFConfig:
    settings = {"variant": variant, "dim": 8, "n_layers": 2, "batch_size": 16, "lr": 0.05, "max_epochs": 40,
                "eval_every": 5, "patience": 10, "seed": 3, **overrides}
    return GraphCFConfig(**settings)


def test_negatives_are_never_training_items() -> None:
    rng = np.random.default_rng(1)
    users = rng.integers(0, 50, size=400)
    items = rng.integers(1, 31, size=400)
    keys = np.unique(users * 31 + items)
    negatives = sample_negatives(np.repeat(np.arange(50), 200), 30, keys, np.random.default_rng(2))
    assert not np.isin(np.repeat(np.arange(50), 200) * 31 + negatives, keys).any()
    assert negatives.min() >= 1 and negatives.max() <= 30


def test_lightgcn_learns_the_communities_deterministically(one_torch_thread: None, tmp_path: Path) -> None:
    """The loss falls, every validation target ranks first once training items are removed, a rerun is
    identical, and a checkpoint reloads to the same scores."""
    train, targets = two_communities()
    result = train_graph_cf(train, targets, N_ITEMS, quick())
    losses = [record["loss"] for record in result.outcome.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.outcome.best_valid["mrr"] == 1.0  # every target ranked first

    again = train_graph_cf(train, targets, N_ITEMS, quick())
    for name, tensor in result.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], tensor)

    torch.save(result.model.state_dict(), tmp_path / "model.pt")
    reloaded = LightGCN(len(train), N_ITEMS, dim=8, n_layers=2)
    reloaded.load_state_dict(torch.load(tmp_path / "model.pt"))
    rows = np.arange(len(train))
    torch.testing.assert_close(score_all_users(reloaded, result.adjacency, rows),
                               score_all_users(result.model, result.adjacency, rows))


@pytest.mark.parametrize("variant", ["con", "gen"])
def test_alignment_variants_train_with_their_loss(one_torch_thread: None, variant: str) -> None:
    train, targets = two_communities()
    rng = np.random.default_rng(4)
    users, items = rng.normal(size=(20, 6)), rng.normal(size=(N_ITEMS, 6))
    result = train_graph_cf(train, targets, N_ITEMS, quick(variant, max_epochs=10), users, items)
    history = result.outcome.history
    assert all(record["alignment"] > 0 for record in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert result.outcome.best_valid["mrr"] >= 0.5


def test_the_shuffled_control_gives_every_node_another_nodes_profile() -> None:
    rng = np.random.default_rng(5)
    users, items = rng.normal(size=(20, 6)), rng.normal(size=(N_ITEMS, 6))
    aligned = _semantic_tables(users, items, 20, N_ITEMS, quick("con"), torch.Generator().manual_seed(0))
    shuffled = _semantic_tables(users, items, 20, N_ITEMS, quick("con", shuffle_profiles=True),
                                torch.Generator().manual_seed(0))
    assert aligned is not None and shuffled is not None
    assert not (aligned == shuffled).all(dim=1).any()  # no node keeps its own vector
    # Users get users' vectors and items items' vectors: the same rows, reordered within each kind.
    assert sorted(map(tuple, shuffled[:20].tolist())) == sorted(map(tuple, aligned[:20].tolist()))
    assert sorted(map(tuple, shuffled[20:].tolist())) == sorted(map(tuple, aligned[20:].tolist()))


def test_alignment_variants_need_semantic_vectors() -> None:
    train, targets = two_communities()
    with pytest.raises(ValueError, match="needs user and item semantic vectors"):
        train_graph_cf(train, targets, N_ITEMS, quick("con"))
