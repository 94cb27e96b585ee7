"""Content-SASRec: the item table of each fusion mode, the padding row, PCA init, and training from content."""

import numpy as np
import pytest
import torch

from ml.data.sequences import SequenceData
from ml.models.content_sasrec import ContentSASRec, ContentSASRecConfig, pca_table
from ml.models.sasrec import SASRec, SASRecConfig
from ml.train.content_sasrec_training import train_content_sasrec
from ml.train.sasrec_training import train_sasrec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(hidden_dim=16, n_layers=1, n_heads=1, max_len=10, dropout=0.0, lr=5e-3, batch_size=32,
             eval_batch_size=64, max_epochs=30, patience=30, eval_every=1, device="cpu")


def _content(n_items: int = 12, dim: int = 6, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n_items, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_hybrid_table_is_the_id_rows_plus_the_projected_content() -> None:
    content = _content()
    model = ContentSASRec(content, ContentSASRecConfig(**{**SMALL, "fusion": "hybrid"}))
    table = model.item_table()
    expected = model.item_embedding.weight[1:] + torch.from_numpy(content) @ model.content_projection.weight.T
    torch.testing.assert_close(table[1:], expected)
    assert torch.count_nonzero(table[0]) == 0  # padding stays exactly zero
    # Gradients reach both parts; the content itself is a frozen buffer, not a parameter.
    table[1:].sum().backward()
    assert model.item_embedding.weight.grad is not None and model.content_projection.weight.grad is not None
    assert "content" not in dict(model.named_parameters())


def test_content_only_has_no_id_rows_and_init_has_no_projection() -> None:
    content = _content()
    only = ContentSASRec(content, ContentSASRecConfig(**{**SMALL, "fusion": "content"}))
    assert only.item_embedding is None and not any("item_embedding" in name for name, _ in only.named_parameters())
    torch.testing.assert_close(only.item_table()[1:], torch.from_numpy(content) @ only.content_projection.weight.T)
    init = ContentSASRec(content, ContentSASRecConfig(**{**SMALL, "fusion": "init"}))
    assert init.content_projection is None
    np.testing.assert_allclose(init.item_table()[1:].detach().numpy(), pca_table(content, 16, 0.02), rtol=1e-6)
    with pytest.raises(ValueError, match="fusion"):
        ContentSASRecConfig(fusion="concat")  # type: ignore[arg-type]


def test_dual_view_scores_are_the_sum_of_the_two_views_read_by_one_shared_encoder() -> None:
    """LLM-ESR's dual view: [ID (PCA-initialised) | W c] per item, each view encoded by the same blocks."""
    content = _content()
    model = ContentSASRec(content, ContentSASRecConfig(**{**SMALL, "fusion": "dual"})).eval()
    table = model.item_table()
    assert table.shape == (13, 32) and torch.count_nonzero(table[0]) == 0
    np.testing.assert_allclose(table[1:, :16].detach().numpy(), pca_table(content, 16, 0.02), rtol=1e-6)
    torch.testing.assert_close(table[1:, 16:], torch.from_numpy(content) @ model.content_projection.weight.T)
    histories = [np.array([3, 5, 7]), np.array([2]), np.array([1, 4, 4, 9, 11, 12])]
    inputs = torch.tensor([[0, 0, 0, 3, 5, 7], [0, 0, 0, 0, 0, 2], [1, 4, 4, 9, 11, 12]])
    with torch.no_grad():
        views = [SASRec.encode(model, inputs, half)[:, -1] for half in table.chunk(2, dim=1)]
        expected = views[0] @ table[:, :16].T + views[1] @ table[:, 16:].T
        torch.testing.assert_close(model.score(histories), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.user_embedding(histories), torch.cat(views, dim=1), rtol=1e-5, atol=1e-6)
    assert model.catalogue_matrix().shape == (12, 32)


@pytest.mark.parametrize("fusion", ["hybrid", "content", "init", "dual"])
def test_a_forward_pass_fusing_only_its_rows_equals_one_over_the_whole_table(fusion: str) -> None:
    torch.manual_seed(0)
    model = ContentSASRec(_content(), ContentSASRecConfig(**{**SMALL, "fusion": fusion})).eval()
    inputs = torch.tensor([[0, 0, 3, 7, 3], [1, 12, 5, 9, 2]])  # padding, a repeat, the last item
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), model.encode(inputs, model.item_table()))
        no_padding = inputs[1:]
        torch.testing.assert_close(model(no_padding), model.encode(no_padding, model.item_table()))


def test_pca_table_keeps_the_content_geometry_at_the_requested_scale() -> None:
    content = _content(n_items=200, dim=8)
    table = pca_table(content, dim=8, std=0.02)
    assert table.shape == (200, 8) and table.std() == pytest.approx(0.02, rel=1e-4)
    # All 8 components of 8-d content: pairwise distances are the centred content's, scaled.
    centred = content - content.mean(axis=0)
    ratio = np.linalg.norm(table[0] - table[1]) / np.linalg.norm(centred[0] - centred[1])
    assert np.linalg.norm(table[5] - table[9]) == pytest.approx(ratio * np.linalg.norm(centred[5] - centred[9]),
                                                               rel=1e-4)
    assert pca_table(content, dim=12, std=0.02).shape == (200, 12)  # wider than the content: zero-padded


def test_same_seed_gives_sasrec_the_same_id_table_and_encoder() -> None:
    """Content-SASRec draws its SASRec part exactly as SASRec does, so an A/B differs only in the content."""
    torch.manual_seed(3)
    plain = SASRec(12, SASRecConfig(**SMALL))
    torch.manual_seed(3)
    hybrid = ContentSASRec(_content(), ContentSASRecConfig(**SMALL))
    torch.testing.assert_close(plain.item_embedding.weight, hybrid.item_embedding.weight)
    torch.testing.assert_close(plain.layers[0].linear1.weight, hybrid.layers[0].linear1.weight)


def _cold_item_data(n_pairs: int = 10, n_users: int = 300, seed: int = 0) -> tuple[SequenceData, np.ndarray]:
    """Items come in twins (a, b) with identical content; each user's history repeats a, the target is b.

    The b items never occur in training, so an ID table only ever pushes them down as negatives; the
    shared content is the one thing that tells a model that b belongs with a.
    """
    rng = np.random.default_rng(seed)
    pair_content = _content(n_pairs, dim=n_pairs, seed=seed) + 3 * np.eye(n_pairs, dtype=np.float32)
    content = np.repeat(pair_content, 2, axis=0)  # items 2p + 1 (a) and 2p + 2 (b) share pair p's content
    pairs = rng.integers(0, n_pairs, size=n_users)
    train = [np.full(int(rng.integers(4, 9)), 2 * pair + 1, dtype=np.int64) for pair in pairs]
    twins = (2 * pairs + 2).astype(np.int64)
    data = SequenceData(dataset="twins", item_ids=[f"i{i:02d}" for i in range(2 * n_pairs)],
                        user_ids=[f"u{u:03d}" for u in range(n_users)], train=train,
                        valid_targets=twins, test_targets=twins)
    return data, content


@pytest.mark.parametrize("fusion", ["hybrid", "dual"])
def test_content_places_items_never_seen_as_training_targets(fusion: str) -> None:
    """A twin item that is never a training target is ranked by content; an ID table cannot learn it."""
    data, content = _cold_item_data()
    config = ContentSASRecConfig(**{**SMALL, "max_epochs": 20, "fusion": fusion})
    fused = train_content_sasrec(data, content, config)
    plain = train_sasrec(data, SASRecConfig(**{**SMALL, "max_epochs": 20}))
    assert fused.best_valid["recall@10"] > plain.best_valid["recall@10"] + 0.2
    assert fused.best_valid["recall@10"] > 0.8


def test_content_rows_must_match_the_vocabulary() -> None:
    data, content = _cold_item_data()
    with pytest.raises(ValueError, match="19 rows for 20 items"):
        train_content_sasrec(data, content[:-1], ContentSASRecConfig(**SMALL))
    content[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_content_sasrec(data, content, ContentSASRecConfig(**SMALL))
