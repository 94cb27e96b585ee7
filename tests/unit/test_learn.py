"""LEARN: shapes, normalization, causality, item tower variants, one-by-one inference, determinism and learning."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from ml.data.sequences import SequenceData
from ml.evaluate.ranking import evaluate_model
from ml.models.learn import LEARN, LEARNConfig, right_pad
from ml.train.learn_loss import LEARNExample
from ml.train.learn_training import batch_loss, collate, train_learn
from ml.train.schedules import cosine_schedule

N_ITEMS, CONTENT_DIM = 12, 16
# Structural tests need the Transformer layers to act from the start: random (not zero) residual branches.
SMALL = LEARNConfig(hidden_dim=32, n_layers=2, n_heads=2, output_dim=16, max_len=20, dropout=0.1, lr=1e-2,
                    batch_size=16, eval_batch_size=64, max_epochs=6, patience=6, device="cpu",
                    zero_init_residual=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _content(n_items: int = N_ITEMS, dim: int = CONTENT_DIM, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_items, dim)).astype(np.float32)


def _model(item_tower: str = "shared", seed: int = 0) -> LEARN:
    torch.manual_seed(seed)
    return LEARN(_content(), replace(SMALL, item_tower=item_tower)).eval()


def _cycles_data(n_cycles: int = 5, cycle_len: int = 6, n_users: int = 200, seed: int = 0) -> SequenceData:
    """Each user walks one of `n_cycles` disjoint item cycles from a random start.

    Disjoint cycles rather than one big cycle: with the paper's shared towers, the user embedding of a
    one-item history [x] is x's own item embedding, so "x is followed by y" pulls x and y together;
    along one cycle through every item that collapses all items to one point. Small cycles collapse
    only to their own cluster, which still ranks the target among the top 10 of 30 items.
    """
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for _ in range(n_users):
        cycle, start, length = rng.integers(0, n_cycles), rng.integers(0, cycle_len), rng.integers(6, 15)
        seq = cycle * cycle_len + (start + np.arange(length)) % cycle_len + 1
        train.append(seq[:-2].astype(np.int64))
        valid.append(seq[-2])
        test.append(seq[-1])
    n_items = n_cycles * cycle_len
    return SequenceData(
        dataset="cycles", item_ids=[f"i{i:02d}" for i in range(n_items)], user_ids=[f"u{u:03d}" for u in range(n_users)],
        train=train, valid_targets=np.array(valid, dtype=np.int64), test_targets=np.array(test, dtype=np.int64),
    )


def test_config_defaults_and_validation() -> None:
    paper = LEARNConfig()
    assert (paper.hidden_dim, paper.n_layers, paper.n_heads, paper.output_dim) == (768, 12, 12, 64)
    assert (paper.n_history_samples, paper.n_target_samples, paper.alpha, paper.beta) == (10, 10, 10.0, 10000.0)
    assert not paper.sampling and paper.item_tower == "shared"
    cpu = LEARNConfig.cpu_default(max_len=30)
    assert (cpu.hidden_dim, cpu.n_layers, cpu.n_heads, cpu.max_len) == (128, 2, 2, 30)
    with pytest.raises(ValueError, match="divisible"):
        LEARNConfig(hidden_dim=100, n_heads=12)
    with pytest.raises(ValueError, match="item_tower"):
        LEARNConfig(item_tower="bidirectional")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="history_cap"):
        LEARNConfig(sampling=True, max_len=30, history_cap=40)
    with pytest.raises(ValueError, match="alpha"):
        LEARNConfig(alpha=1.0)
    with pytest.raises(ValueError, match="temperature"):
        LEARNConfig(temperature=0.0)
    with pytest.raises(ValueError, match="content_dim"):
        LEARN(_content(), replace(SMALL, content_dim=CONTENT_DIM + 1))


def test_right_pad_keeps_the_most_recent_items_left_aligned() -> None:
    padded = right_pad([np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([], dtype=np.int64)], max_len=3)
    assert padded.tolist() == [[3, 4, 5], [7, 0, 0], [0, 0, 0]]


def test_shapes_and_unit_norm() -> None:
    model = _model()
    history = torch.tensor([[3, 4, 5, 0], [1, 2, 3, 4]])
    with torch.no_grad():
        states, items = model.user_states(history), model.item_states(history)
    assert states.shape == items.shape == (2, 4, 16)
    real = history != 0
    torch.testing.assert_close(states[real].norm(dim=-1), torch.ones(int(real.sum())))
    torch.testing.assert_close(items[real].norm(dim=-1), torch.ones(int(real.sum())))
    assert (states[~real] == 0).all() and (items[~real] == 0).all()
    users = model.user_embedding([np.array([3, 4]), np.array([1]), np.arange(1, 13)])
    assert users.shape == (3, 16)
    scores = model.score([np.array([3, 4]), np.array([1]), np.arange(1, 13)])
    assert scores.shape == (3, N_ITEMS + 1)
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all() and torch.isfinite(scores[:, 1:]).all()
    assert not model.training
    # The frozen content is a buffer: row 0 (padding) is zero, rows 1.. are the content; it is not learned.
    assert model.content.shape == (N_ITEMS + 1, CONTENT_DIM) and (model.content[0] == 0).all()
    assert not any(parameter is model.content for parameter in model.parameters())
    assert "content" not in model.state_dict()


def test_user_tower_is_causal() -> None:
    model = _model()
    history = torch.tensor([[5, 6, 7, 8]])
    changed = history.clone()
    changed[0, -1] = 2
    with torch.no_grad():
        before, after = model.user_states(history), model.user_states(changed)
        torch.testing.assert_close(before[:, :-1], after[:, :-1])
        assert not torch.allclose(before[:, -1], after[:, -1])
        changed_first = history.clone()
        changed_first[0, 0] = 2
        assert not torch.allclose(model.user_states(changed_first)[:, -1], before[:, -1])  # later sees earlier
        # The state after item i is the user embedding of the prefix ending at i.
        torch.testing.assert_close(before[:, 1], model.user_embedding([np.array([5, 6])]))


def test_user_embedding_does_not_depend_on_batch_padding_and_truncates() -> None:
    model = _model()
    short = np.array([3, 9, 4])
    torch.testing.assert_close(model.user_embedding([short])[0],
                               model.user_embedding([short, np.arange(1, 13)])[0], rtol=1e-5, atol=1e-5)
    long_history = np.r_[np.full(30, 7), np.arange(1, 13)]
    torch.testing.assert_close(model.score([long_history]), model.score([long_history[-SMALL.max_len:]]))


@pytest.mark.parametrize("item_tower", ["shared", "self_attention_only", "content_projection"])
def test_item_towers_embed_items_one_by_one(item_tower: str) -> None:
    model = _model(item_tower)
    content = model.content[1:]
    with torch.no_grad():
        matrix = model.item_matrix(content, batch_size=5)
        assert matrix.shape == (N_ITEMS, 16)
        torch.testing.assert_close(matrix.norm(dim=-1), torch.ones(N_ITEMS))
        one_by_one = torch.cat([model.item_matrix(content[i : i + 1]) for i in range(N_ITEMS)])
        torch.testing.assert_close(matrix, one_by_one, rtol=1e-5, atol=1e-6)
        # An item alone through the training-time item tower is its inference embedding.
        alone = model.item_states(torch.arange(1, N_ITEMS + 1).unsqueeze(1))[:, 0]
        torch.testing.assert_close(matrix, alone, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.as_tensor(model.catalogue_matrix()), matrix)


def test_item_tower_variants_differ_in_context() -> None:
    target = torch.tensor([[4, 5, 6]])
    with torch.no_grad():
        shared, diagonal, projection = (_model(tower) for tower in ("shared", "self_attention_only",
                                                                     "content_projection"))
        # Same weights (same seed): the first target item attends only to itself in both (a) and (b).
        a, b = shared.item_states(target), diagonal.item_states(target)
        torch.testing.assert_close(a[:, 0], b[:, 0])
        assert not torch.allclose(a[:, 2], b[:, 2])  # (a) sees earlier targets, (b) does not
        changed = torch.tensor([[9, 5, 6]])
        torch.testing.assert_close(diagonal.item_states(changed)[:, 1:], b[:, 1:])
        # (c) has no Transformer: adapter + projection of the content only.
        c = projection.item_states(target)
        expected = torch.nn.functional.normalize(projection.projection(projection.adapter(projection.content[target])),
                                                 dim=-1)
        torch.testing.assert_close(c, expected)


def test_zero_initialized_residual_branches_make_the_untrained_towers_a_map_of_the_content() -> None:
    torch.manual_seed(0)
    model = LEARN(_content(), replace(SMALL, zero_init_residual=True, dropout=0.0)).eval()
    history = torch.tensor([[4, 5, 6, 0]])
    with torch.no_grad():
        states = model.user_states(history)
        # No layer changes its input yet: each position is adapter -> LayerNorm -> final norm -> projection.
        hidden = model.input_norm(model.adapter(model.content[history]) + model.position_embedding.weight[:4])
        expected = torch.nn.functional.normalize(model.projection(model.final_norm(hidden)), dim=-1)
        torch.testing.assert_close(states[:, :3], expected[:, :3])
    # The branches are zero, not frozen: one training step moves them.
    loss = batch_loss(model.train(), collate([LEARNExample(np.array([1, 2]), np.array([3]), np.arange(2), np.arange(1)),
                                              LEARNExample(np.array([4]), np.array([5, 6]), np.arange(1), np.arange(2))],
                                             20))
    loss.backward()
    assert model.layers[0].linear2.weight.grad.abs().sum() > 0


def test_cached_item_matrix_gives_the_same_scores() -> None:
    model = _model()
    histories = [np.array([3, 4]), np.array([1, 2, 3])]
    uncached = model.score(histories)
    model.train()
    with model.cached_items() as items:
        assert items.shape == (N_ITEMS, 16) and not model.training
        torch.testing.assert_close(model.score(histories), uncached)
    assert model.training and model._item_cache is None


def test_batch_loss_gathers_the_sampled_positions() -> None:
    torch.manual_seed(0)
    model = LEARN(_content(), replace(SMALL, dropout=0.0))
    examples = [
        LEARNExample(np.array([1, 2, 3]), np.array([4, 5]), np.array([0, 2]), np.array([1])),
        LEARNExample(np.array([7]), np.array([8, 9, 10]), np.array([0]), np.array([0, 2])),
    ]
    batch = collate(examples, SMALL.max_len)
    assert batch.history.tolist() == [[1, 2, 3], [7, 0, 0]]
    assert batch.history_mask.tolist() == [[True, True], [True, False]]
    assert batch.target_positions.tolist() == [[1, 0], [0, 2]] and batch.target_mask.tolist() == [[True, False],
                                                                                                [True, True]]
    loss = batch_loss(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.adapter.weight.grad is not None and model.log_temperature.grad is not None


def test_cosine_schedule_with_warmup() -> None:
    schedule = cosine_schedule(total_steps=10, warmup_steps=2)
    assert [schedule(step) for step in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert schedule(6) == pytest.approx(0.5) and schedule(10) == pytest.approx(0.0)
    assert cosine_schedule(4)(0) == 1.0


def test_training_is_deterministic_for_a_seed() -> None:
    data = _cycles_data(n_users=60)
    config = replace(SMALL, max_epochs=2, n_layers=1)
    content = _content(30)
    first, second = train_learn(data, content, config), train_learn(data, content, config)
    assert np.array_equal(first.item_embeddings(), second.item_embeddings())
    assert [r["loss"] for r in first.history] == [r["loss"] for r in second.history]
    other = train_learn(data, content, replace(config, seed=1))
    assert not np.array_equal(first.item_embeddings(), other.item_embeddings())
    with pytest.raises(ValueError, match="aligned"):
        train_learn(data, content[:-1], config)


def test_learns_co_occurring_items_far_above_random_and_keeps_the_best_epoch() -> None:
    data = _cycles_data()
    epochs: list[int] = []
    result = train_learn(data, _content(30), SMALL, on_epoch=lambda epoch, record: epochs.append(epoch))
    assert epochs == list(range(1, SMALL.max_epochs + 1)) and len(result.history) == SMALL.max_epochs
    assert result.config.content_dim == CONTENT_DIM
    # Random ranking of 30 items puts the target in the top 10 a third of the time.
    assert result.best_valid["recall@10"] > 0.8
    assert result.best_valid["ndcg@10"] == max(r["valid_ndcg@10"] for r in result.history)
    assert result.history[result.best_epoch - 1]["valid_ndcg@10"] == result.best_valid["ndcg@10"]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # The returned model carries the best epoch's weights, in eval mode.
    assert not result.model.training
    again = evaluate_model(result.model.score, *data.history("valid"), batch_size=SMALL.eval_batch_size)
    assert again.metrics["ndcg@10"] == pytest.approx(result.best_valid["ndcg@10"])
    embeddings = result.item_embeddings()
    assert embeddings.shape == (30, 16) and embeddings.dtype == np.float32
