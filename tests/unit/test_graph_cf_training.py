"""LightGCN / RLMRec training (ml/train/graph_cf_training.py) on a tiny two-community graph, on CPU in seconds."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ml.evaluate.ranking import evaluate_protocols
from ml.models.checkpoints import item_vectors, load_checkpoint, save_checkpoint, user_vectors
from ml.models.graph_cf import GraphCFConfig
from ml.train.graph_cf_training import _semantic_tables, sample_negatives, train_graph_cf

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


@pytest.mark.parametrize("backbone", ["lightgcn", "simgcl", "gccf"])
def test_each_backbone_learns_the_communities_deterministically(one_torch_thread: None, tmp_path: Path,
                                                               backbone: str) -> None:
    """The loss falls, every validation target ranks first, a rerun is identical, and the checkpoint
    reloads to the same scores and vectors."""
    train, targets = two_communities()
    result = train_graph_cf(train, targets, N_ITEMS, quick(backbone=backbone))
    losses = [record["loss"] for record in result.outcome.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.outcome.best_valid["mrr"] == 1.0  # every target ranked first
    if backbone == "simgcl":
        assert all(record["self_supervised"] > 0 for record in result.outcome.history)

    again = train_graph_cf(train, targets, N_ITEMS, quick(backbone=backbone))
    for name, tensor in result.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], tensor)

    item_ids = [f"item{i}" for i in range(1, N_ITEMS + 1)]
    saved = save_checkpoint(tmp_path, "toy", backbone, result.model, item_ids, result.config, {"run": "test"})
    reloaded = load_checkpoint(tmp_path, "toy", backbone).model
    assert saved.kind == "graph_cf"
    rows = np.arange(len(train))
    torch.testing.assert_close(reloaded.score(train, rows), result.model.score(train, rows))
    np.testing.assert_array_equal(item_vectors(reloaded), item_vectors(result.model))
    np.testing.assert_array_equal(user_vectors(reloaded, train, user_rows=rows),
                                  user_vectors(result.model, train, user_rows=rows))


def test_served_scores_leave_out_the_history_and_the_evaluator_passes_user_rows(one_torch_thread: None) -> None:
    """Users are scored by their own row whatever order the evaluator batches them in; history items are -inf."""
    train, targets = two_communities()
    model = train_graph_cf(train, targets, N_ITEMS, quick(max_epochs=5)).model
    rows = np.arange(len(train))
    scores = model.score(train, rows)
    for row, history in enumerate(train):
        assert torch.isinf(scores[row, history]).all()
        assert torch.isfinite(scores[row, np.setdiff1d(np.arange(1, N_ITEMS + 1), history)]).all()
    # Batches of 3, shortest history first: the ranks must equal those of one full pass in row order.
    batched = evaluate_protocols(model.score, train, targets, batch_size=3, user_rows=rows)[False]
    full = evaluate_protocols(model.score, train, targets, batch_size=len(train), user_rows=rows)[False]
    np.testing.assert_array_equal(batched.ranks, full.ranks)
    raw = GraphCFConfig(**{**model.config.__dict__, "exclude_history": False})
    model.config = raw
    assert torch.isfinite(model.score(train, rows)[:, 1:]).all()


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


@pytest.mark.parametrize(("variant", "weight_field"), [("con", "alignment_weight"), ("gen", "reconstruction_weight")])
def test_each_variant_weighs_its_alignment_term_by_its_own_weight(one_torch_thread: None, variant: str,
                                                                 weight_field: str) -> None:
    train, targets = two_communities()
    rng = np.random.default_rng(4)
    users, items = rng.normal(size=(20, 6)), rng.normal(size=(N_ITEMS, 6))
    # Con and Gen get different weights, so a variant reading the other's weight fails the identity below.
    config = quick(variant, max_epochs=5, alignment_weight=0.03, reconstruction_weight=0.7)
    for record in train_graph_cf(train, targets, N_ITEMS, config, users, items).outcome.history:
        expected = record["bpr"] + record["self_supervised"] + getattr(config, weight_field) * record["alignment"]
        assert record["loss"] == pytest.approx(expected, rel=1e-5)


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


def test_a_rerun_with_two_threads_gives_the_same_weights() -> None:
    """Batches repeat each user hundreds of times; their gradients must add up in a fixed order."""
    rng = np.random.default_rng(6)
    train = [rng.choice(np.arange(1, 301), size=60, replace=False).astype(np.int64) for _ in range(100)]
    targets = rng.integers(1, 301, size=100)
    config = GraphCFConfig(dim=16, n_layers=2, batch_size=4096, lr=0.01, max_epochs=2, eval_every=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = train_graph_cf(train, targets, 300, config).model.state_dict()
        second = train_graph_cf(train, targets, 300, config).model.state_dict()
    finally:
        torch.set_num_threads(threads)
    for name, tensor in first.items():
        assert torch.equal(second[name], tensor), name


def test_loading_other_weights_in_eval_mode_drops_the_cached_propagation(one_torch_thread: None) -> None:
    train, targets = two_communities()
    model = train_graph_cf(train, targets, N_ITEMS, quick(max_epochs=5)).model
    rows = np.arange(len(train))
    before = model.score(train, rows)  # fills the eval-mode cache
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state["backbone.embedding.weight"] = 2 * state["backbone.embedding.weight"]  # every score x 4
    model.load_state_dict(state)
    after = model.score(train, rows)
    assert model.training is False
    assert not torch.equal(before, after)
