"""Semantic vectors for RLMRec (ml/data/semantic_vectors.py): row alignment, coverage shares, clear failures."""

from pathlib import Path

import numpy as np
import pytest

from ml.data.embedding_store import write_embeddings
from ml.data.semantic_vectors import read_semantic_vectors
from ml.data.sequences import SequenceData
from ml.data.versioned import NoCurrentVersion

DATA = SequenceData(dataset="toy", item_ids=["a", "b", "c"], user_ids=["u1", "u2"],
                    train=[np.array([1, 2]), np.array([3])], valid_targets=np.array([3, 1]),
                    test_targets=np.array([2, 2]))


def test_profiles_are_aligned_to_the_split_rows_with_their_coverage(tmp_path: Path) -> None:
    items = np.eye(3, 4, dtype=np.float32)
    write_embeddings(tmp_path, "toy", "item_profile", ["a", "b", "c"], items, "m",
                     {"source": ["profile", "catalog_text", "catalog_text"]})
    # Stored in another user order than the split's: rows must follow the split.
    users = np.array([[0, 0, 0, 2], [0, 0, 0, 1]], dtype=np.float32)
    write_embeddings(tmp_path, "toy", "user_profile", ["u2", "u1"], users, "m", {"source": ["history_mean", "profile"]})
    vectors = read_semantic_vectors(tmp_path, DATA, "profiles")
    np.testing.assert_array_equal(vectors.items, items)
    np.testing.assert_array_equal(vectors.users, users[[1, 0]])
    assert vectors.provenance["item_profile_coverage"] == pytest.approx(1 / 3)
    assert vectors.provenance["user_profile_coverage"] == pytest.approx(1 / 2)


def test_catalog_text_users_are_the_normalized_mean_of_their_training_items(tmp_path: Path) -> None:
    items = np.array([[1, 0], [0, 1], [3, 4]], dtype=np.float32)
    write_embeddings(tmp_path, "toy", "item_text", ["a", "b", "c"], items, "m")
    vectors = read_semantic_vectors(tmp_path, DATA, "catalog_text")
    np.testing.assert_allclose(vectors.users, [[2 ** -0.5, 2 ** -0.5], [0.6, 0.8]], rtol=1e-6)
    assert vectors.provenance["item_profile_coverage"] == 0.0


def test_a_missing_user_or_set_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(NoCurrentVersion):
        read_semantic_vectors(tmp_path, DATA, "catalog_text")
    write_embeddings(tmp_path, "toy", "item_profile", ["a", "b", "c"], np.ones((3, 2), np.float32), "m")
    write_embeddings(tmp_path, "toy", "user_profile", ["u1"], np.ones((1, 2), np.float32), "m")
    with pytest.raises(ValueError, match="miss 1 users"):
        read_semantic_vectors(tmp_path, DATA, "profiles")
