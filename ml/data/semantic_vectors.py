"""The semantic (LLM-side) vector of every user and item of a split, for RLMRec's alignment.

Two sources, both MiniLM vectors of one width:

- `profiles`: the RLMRec profile embeddings (`item_profile`, `user_profile`). Where no generated
  profile exists the store already fell back (its `source` column): an item to its catalog text, a
  user to the mean of their last training items' vectors. The coverage shares say how much of the
  alignment signal really comes from generated profiles.
- `catalog_text`: every item's catalog text (`item_text`) and every user the mean of their last
  training items' vectors, the same fallback as above: full item coverage without any generation,
  so the alignment's effect is measurable on CPU, where few profiles get generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ml.data.embedding_store import StoredEmbeddings, read_embeddings, read_item_content
from ml.data.sequences import SequenceData
from ml.data.versioned import NoCurrentVersion

SemanticSource = Literal["profiles", "catalog_text"]
UserSource = Literal["profiles", "history_mean"]
ITEM_TEXT, ITEM_PROFILE, USER_PROFILE, ITEM_LLM = "item_text", "item_profile", "user_profile", "item_llm"
# Training items averaged for a user without a profile (the profile stage's own fallback).
HISTORY_MEAN_ITEMS = 10


@dataclass(frozen=True)
class SemanticVectors:
    """Row-aligned semantic vectors: users in `data.user_ids` order, items in vocabulary order."""

    users: np.ndarray  # (n_users, dim) float32
    items: np.ndarray  # (n_items, dim) float32
    provenance: dict[str, float | str]  # sets, versions and coverage shares, for MLflow and the manifest


def history_mean_vectors(histories: list[list[int]], item_vectors: np.ndarray) -> np.ndarray:
    """For each history (row indices into `item_vectors`), the L2-normalized mean of those item vectors."""
    means = np.stack([item_vectors[rows].mean(axis=0) for rows in histories]) if histories else \
        np.zeros((0, item_vectors.shape[1]), dtype=np.float32)
    return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _share(stored: StoredEmbeddings, value: str) -> float:
    """Share of the stored rows whose `source` is `value`."""
    sources = stored.columns.get("source", [])
    return sum(source == value for source in sources) / len(sources) if sources else 0.0


def read_semantic_vectors(root: Path, data: SequenceData, source: SemanticSource) -> SemanticVectors:
    """The users' and items' semantic vectors of `data` from the embedding store at `root`.

    Raises `NoCurrentVersion` when a set is not published, ValueError when a set misses a user or item.
    """
    if source == "profiles":
        items = read_item_content(root, data.dataset, ITEM_PROFILE, data.item_ids)
        users = _user_profile_vectors(root, data)
        user_vectors = _rows_in_user_order(users, data)
        return SemanticVectors(user_vectors.astype(np.float32), np.asarray(items.vectors, dtype=np.float32), {
            "semantic_source": source, "item_set_version": items.path.name, "user_set_version": users.path.name,
            "item_profile_coverage": _share(items, "profile"), "user_profile_coverage": _share(users, "profile"),
        })
    if source == "catalog_text":
        items = read_item_content(root, data.dataset, ITEM_TEXT, data.item_ids)
        item_vectors = np.asarray(items.vectors, dtype=np.float32)
        # Item index i is row i - 1 of the item set.
        user_vectors = history_mean_vectors([list(history[-HISTORY_MEAN_ITEMS:] - 1) for history in data.train],
                                            item_vectors)
        return SemanticVectors(user_vectors, item_vectors, {
            "semantic_source": source, "item_set_version": items.path.name, "user_set_version": "history_mean",
            "item_profile_coverage": 0.0, "user_profile_coverage": 0.0,
        })
    raise ValueError(f"unknown semantic source {source!r}; known: profiles, catalog_text")


def _user_profile_vectors(root: Path, data: SequenceData) -> StoredEmbeddings:
    """The `user_profile` embeddings, checked to hold every user of the split."""
    users = read_embeddings(root, data.dataset, USER_PROFILE)
    missing = set(data.user_ids) - set(users.ids)
    if missing:
        raise ValueError(f"{USER_PROFILE} embeddings of {data.dataset} ({users.path}) miss {len(missing)} users, "
                         f"e.g. {sorted(missing)[:3]}; rematerialize profile_embeddings")
    return users


def _rows_in_user_order(users: StoredEmbeddings, data: SequenceData) -> np.ndarray:
    """(n_users, dim) float32 rows of a user set in the split's user order."""
    position = {user: row for row, user in enumerate(users.ids)}
    return np.asarray(users.vectors, dtype=np.float32)[[position[user] for user in data.user_ids]]


def read_llm_semantics(root: Path, data: SequenceData, user_source: UserSource = "profiles") -> SemanticVectors:
    """ED2's semantic input: items from the frozen LLM (`item_llm`) when published, else `item_text`; users' profiles.

    `item_llm` is published only once every item is encoded, so its presence means it is complete.
    Users read the `user_profile` set, whose `source` column says generated profile or history-mean
    fallback (the share of generated ones is in the provenance); `user_source="history_mean"` gives
    every user that fallback directly, from the item vectors read, without the profile stage. Raises
    `NoCurrentVersion` when neither item set, or (profiles) no user set, is published.
    """
    try:
        items = read_item_content(root, data.dataset, ITEM_LLM, data.item_ids)
    except NoCurrentVersion:
        items = read_item_content(root, data.dataset, ITEM_TEXT, data.item_ids)
    item_vectors = np.asarray(items.vectors, dtype=np.float32)
    provenance: dict[str, float | str] = {"item_semantic_set": items.path.parent.name,
                                          "item_set_version": items.path.name, "user_semantic_source": user_source}
    if user_source == "history_mean":
        user_vectors = history_mean_vectors([list(history[-HISTORY_MEAN_ITEMS:] - 1) for history in data.train],
                                            item_vectors)
        return SemanticVectors(user_vectors, item_vectors, {**provenance, "user_set_version": "history_mean",
                                                            "user_profile_coverage": 0.0})
    users = _user_profile_vectors(root, data)
    return SemanticVectors(_rows_in_user_order(users, data), item_vectors, {
        **provenance, "user_set_version": users.path.name, "user_profile_coverage": _share(users, "profile")})
