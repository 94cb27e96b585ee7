"""Top-k recommendations from the published index: by a stored user vector or by an item history.

The default history encoder is the simplest one that needs no model: the mean of the history items'
indexed vectors, L2-normalized. A sequential model's own encoder (e.g. SASRec over the history) can
replace it through `history_encoder`, as long as it returns a vector in the index's space.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ml.index.store import index_folder, read_version

logger = logging.getLogger(__name__)

HistoryEncoder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Recommendation:
    """One recommended item, its index score (inner product) and its title if one was given."""

    item_id: str
    score: float
    title: str | None = None


@dataclass(frozen=True)
class LoadedIndex:
    """A published index version in memory, with id <-> row lookups."""

    dataset: str
    version: str
    path: Path
    manifest: dict[str, Any]
    index: faiss.Index
    item_ids: list[str]
    item_vectors: np.ndarray
    item_rows: dict[str, int]
    user_vectors: np.ndarray | None
    user_rows: dict[str, int] | None
    titles: dict[str, str] | None = None
    user_histories: list[list[str]] | None = None  # aligned with user rows, oldest first, when published

    def seen_by(self, user_id: str) -> list[str]:
        """The user's published history (oldest first); empty when the version carries no histories."""
        if self.user_histories is None or self.user_rows is None or user_id not in self.user_rows:
            return []
        return self.user_histories[self.user_rows[user_id]]


def load_version(root: Path, dataset: str, version: str) -> LoadedIndex:
    """Load one published version, checking every file's checksum; raises `IndexVerificationError` if one fails."""
    path = index_folder(root, dataset).path(version)
    if not path.is_dir():
        raise FileNotFoundError(f"no index version {version!r} of {dataset} under {path.parent}")
    contents = read_version(path)
    user_rows = {user: row for row, user in enumerate(contents.user_ids)} if contents.user_ids is not None else None
    logger.info("loaded index %s of %s (%d items)", version, dataset, len(contents.item_ids))
    return LoadedIndex(
        dataset=dataset, version=version, path=path, manifest=contents.manifest, index=contents.index,
        item_ids=contents.item_ids, item_vectors=contents.item_vectors,
        item_rows={item: row for row, item in enumerate(contents.item_ids)},
        user_vectors=contents.user_vectors, user_rows=user_rows,
        titles=None if contents.item_titles is None else {
            item: title for item, title in zip(contents.item_ids, contents.item_titles, strict=True) if title},
        user_histories=contents.user_histories,
    )


def load_current(root: Path, dataset: str) -> LoadedIndex:
    """Load the version CURRENT names; raises `NoCurrentVersion` if nothing is published."""
    return load_version(root, dataset, index_folder(root, dataset).current())


def mean_history_vector(loaded: LoadedIndex, history: Sequence[str]) -> np.ndarray:
    """The default history encoder: the L2-normalized mean of the history items' vectors."""
    rows = [loaded.item_rows[item] for item in history]
    mean = loaded.item_vectors[rows].mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean  # opposite items can cancel out; an all-zero query ranks nothing


def _query_vector(
    loaded: LoadedIndex, user_id: str | None, history: list[str], history_encoder: HistoryEncoder | None,
) -> np.ndarray:
    if user_id is not None:
        if loaded.user_rows is None or loaded.user_vectors is None:
            raise ValueError(f"index {loaded.version} of {loaded.dataset} has no user vectors; recommend by history")
        if user_id not in loaded.user_rows:
            raise ValueError(f"unknown user {user_id!r} in index {loaded.version} of {loaded.dataset}")
        return loaded.user_vectors[loaded.user_rows[user_id]]
    if not history:
        raise ValueError("give a user_id or a non-empty item history")
    query = history_encoder(history) if history_encoder is not None else mean_history_vector(loaded, history)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if query.shape != (loaded.item_vectors.shape[1],) or not np.isfinite(query).all():
        raise ValueError(
            f"the history encoder must return a finite vector of dim {loaded.item_vectors.shape[1]}, "
            f"not shape {query.shape}"
        )
    return query


def recommend(
    loaded: LoadedIndex,
    user_id: str | None = None,
    history: Sequence[str] | None = None,
    k: int = 10,
    exclude_history: bool = True,
    titles: dict[str, str] | None = None,
    history_encoder: HistoryEncoder | None = None,
    exclude: Sequence[str] = (),
) -> list[Recommendation]:
    """The top `k` items for a user id (its stored vector) or, without one, for an item history.

    With both, the user vector is the query and the history only says what to exclude. `exclude`
    names more items to leave out (ids the index does not hold are ignored: they cannot be returned).
    Approximate indexes may return fewer than `k` items; so does a catalogue smaller than `k` plus the
    excluded items. Titles come from `titles`, else from the index version itself.
    """
    if k < 1:
        raise ValueError(f"k must be positive, not {k}")
    history = [str(item) for item in history or []]
    unknown = [item for item in history if item not in loaded.item_rows]
    if unknown:
        raise ValueError(f"{len(unknown)} history item(s) not in index {loaded.version} of {loaded.dataset}: "
                         f"{unknown[:5]}")
    query = _query_vector(loaded, user_id, history, history_encoder)
    excluded = {loaded.item_rows[item] for item in history} if exclude_history else set()
    excluded |= {loaded.item_rows[item] for item in exclude if item in loaded.item_rows}
    # Ask for enough extra candidates that k remain after dropping the excluded ones.
    scores, rows = loaded.index.search(query[None, :], min(len(loaded.item_ids), k + len(excluded)))
    titles = titles or loaded.titles or {}
    picked: list[Recommendation] = []
    for score, row in zip(scores[0], rows[0], strict=True):
        if row < 0 or row in excluded:
            continue
        item = loaded.item_ids[row]
        picked.append(Recommendation(item_id=item, score=float(score), title=titles.get(item)))
        if len(picked) == k:
            break
    return picked
