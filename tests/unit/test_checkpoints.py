"""Checkpoints of every model kind: round trip, content versions, corruption, and the retrieval interface."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.models.checkpoints import (
    history_encoder,
    item_vectors,
    load_checkpoint,
    save_checkpoint,
    supports_retrieval,
    user_vectors,
)
from ml.models.content_sasrec import ContentSASRec, ContentSASRecConfig
from ml.models.learn import LEARN, LEARNConfig
from ml.models.popularity import PopularityModel
from ml.models.sasrec import SASRec, SASRecConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ITEMS = 12
ITEM_IDS = [f"i{index:02d}" for index in range(N_ITEMS)]
HISTORIES = [np.array([1, 2, 3]), np.array([5]), np.array([4, 4, 9, 12, 7])]


def _models() -> dict[str, tuple[torch.nn.Module, object]]:
    torch.manual_seed(0)
    sasrec_config = SASRecConfig(hidden_dim=8, n_layers=1, n_heads=2, max_len=6)
    learn_config = LEARNConfig.cpu_default(hidden_dim=8, n_layers=1, n_heads=2, output_dim=4, max_len=6)
    content = np.random.default_rng(0).normal(size=(N_ITEMS, 5)).astype(np.float32)
    content_config = ContentSASRecConfig(hidden_dim=8, n_layers=1, n_heads=2, max_len=6)
    content_model = ContentSASRec(content, content_config).eval()
    dual_config = ContentSASRecConfig(hidden_dim=8, n_layers=1, n_heads=2, max_len=6, fusion="dual")
    dual_model = ContentSASRec(content, dual_config).eval()
    with torch.no_grad():
        content_model.item_embedding.weight[1:] += 0.1  # an ID part that differs from a fresh model's
        dual_model.item_embedding.weight[1:] -= 0.1
    return {
        "content_sasrec": (content_model, content_config),
        "content_sasrec_dual": (dual_model, dual_config),
        "popularity": (PopularityModel.fit([np.array([1, 1, 2]), np.array([3, 1])], N_ITEMS), None),
        "sasrec": (SASRec(N_ITEMS, sasrec_config).eval(), sasrec_config),
        "learn": (LEARN(content, learn_config).eval(), learn_config),
    }


@pytest.mark.parametrize("name", ["popularity", "sasrec", "content_sasrec", "content_sasrec_dual", "learn"])
def test_round_trip_scores_identically_and_rewrites_nothing(tmp_path: Path, name: str) -> None:
    model, config = _models()[name]
    saved = save_checkpoint(tmp_path, "toy", name, model, ITEM_IDS, config, {"best_epoch": 3})
    loaded = load_checkpoint(tmp_path, "toy", name)
    kind = name.removesuffix("_dual")
    assert (loaded.kind, loaded.version, loaded.item_ids) == (kind, saved.version, ITEM_IDS)
    assert loaded.manifest["info"] == {"best_epoch": 3}
    torch.testing.assert_close(loaded.model.score(HISTORIES), model.score(HISTORIES))
    # Same weights and vocabulary -> the same version; nothing new is written.
    again = save_checkpoint(tmp_path, "toy", name, model, ITEM_IDS, config, {"best_epoch": 99})
    assert again.version == saved.version and again.manifest["info"] == {"best_epoch": 3}
    assert [entry.name for entry in (tmp_path / "toy" / name).iterdir() if entry.is_dir()] == [saved.version]


def test_changed_weights_make_a_new_current_version(tmp_path: Path) -> None:
    model, config = _models()["sasrec"]
    first = save_checkpoint(tmp_path, "toy", "sasrec", model, ITEM_IDS, config, {})
    with torch.no_grad():
        model.item_embedding.weight[1] += 1.0
    second = save_checkpoint(tmp_path, "toy", "sasrec", model, ITEM_IDS, config, {})
    assert second.version != first.version and load_checkpoint(tmp_path, "toy", "sasrec").version == second.version
    assert load_checkpoint(tmp_path, "toy", "sasrec", first.version).version == first.version


def test_a_corrupted_checkpoint_is_refused(tmp_path: Path) -> None:
    model, config = _models()["learn"]
    saved = save_checkpoint(tmp_path, "toy", "learn", model, ITEM_IDS, config, {})
    weights = saved.path / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted: model.pt"):
        load_checkpoint(tmp_path, "toy", "learn")


def test_a_manifest_without_checksums_is_refused(tmp_path: Path) -> None:
    """An emptied file list must not turn verification off."""
    model, config = _models()["sasrec"]
    saved = save_checkpoint(tmp_path, "toy", "sasrec", model, ITEM_IDS, config, {})
    manifest_path = saved.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"] = {}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no checksum for \\['item_ids.json', 'model.pt'\\]"):
        load_checkpoint(tmp_path, "toy", "sasrec")


def test_wrong_vocabulary_size_is_refused(tmp_path: Path) -> None:
    model, config = _models()["sasrec"]
    with pytest.raises(ValueError, match="11 item ids for a model of 12 items"):
        save_checkpoint(tmp_path, "toy", "sasrec", model, ITEM_IDS[:-1], config, {})


@pytest.mark.parametrize("name", ["sasrec", "content_sasrec", "content_sasrec_dual", "learn"])
def test_user_times_item_vectors_reproduce_the_model_scores(name: str) -> None:
    model, _ = _models()[name]
    assert supports_retrieval(model)
    scores = user_vectors(model, HISTORIES) @ item_vectors(model).T
    np.testing.assert_allclose(scores, model.score(HISTORIES)[:, 1:].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["sasrec", "learn"])
def test_user_vectors_come_back_in_the_callers_order_whatever_the_batching(name: str) -> None:
    """Users are encoded shortest history first, in batches; each vector is still its own history's."""
    model, _ = _models()[name]
    one_by_one = np.concatenate([user_vectors(model, [history]) for history in HISTORIES])
    np.testing.assert_allclose(user_vectors(model, HISTORIES, batch_size=2), one_by_one, rtol=1e-5, atol=1e-6)


def test_history_encoder_maps_item_ids_through_the_vocabulary(tmp_path: Path) -> None:
    model, config = _models()["sasrec"]
    checkpoint = save_checkpoint(tmp_path, "toy", "sasrec", model, ITEM_IDS, config, {})
    encode = history_encoder(checkpoint)
    np.testing.assert_allclose(encode(["i00", "i01", "i02"]), user_vectors(model, [np.array([1, 2, 3])])[0],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="unknown to model"):
        encode(["nope"])
    popularity = save_checkpoint(tmp_path, "toy", "popularity", _models()["popularity"][0], ITEM_IDS, None, {})
    assert not supports_retrieval(popularity.model)
    with pytest.raises(ValueError, match="no user tower"):
        history_encoder(popularity)


def test_popularity_counts_training_items_and_never_ranks_padding() -> None:
    model = PopularityModel.fit([np.array([1, 1, 2]), np.array([3, 1])], 4)
    scores = model.score([np.array([1]), np.array([2, 3])])
    assert scores.shape == (2, 5) and torch.isinf(scores[:, 0]).all()
    assert scores[0, 1:].tolist() == [3.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="outside 1..4"):
        PopularityModel.fit([np.array([5])], 4)


def test_check_user_rows_refuses_a_model_trained_on_another_user_list() -> None:
    from ml.data.sequences import SequenceData
    from ml.models.checkpoints import check_user_rows

    def split(users: list[str]) -> SequenceData:
        return SequenceData(dataset="toy", item_ids=["a", "b"], user_ids=users,
                            train=[np.array([1, 2])] * len(users), valid_targets=np.ones(len(users), dtype=np.int64),
                            test_targets=np.full(len(users), 2, dtype=np.int64))

    trained_on = split(["u1", "u2"])
    check_user_rows({"user_ids_digest": trained_on.user_ids_digest()}, split(["u1", "u2"]), "graph_cf")
    with pytest.raises(ValueError, match="graph_cf was trained on another user list"):
        check_user_rows({"user_ids_digest": trained_on.user_ids_digest()}, split(["u1", "u3"]), "graph_cf")
    with pytest.raises(ValueError, match="another user list"):
        check_user_rows({}, split(["u1", "u2"]), "ed2")  # a manifest without the digest is refused too
