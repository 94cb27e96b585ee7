"""One published index version in memory, with what serving needs beside the faiss index.

A `ServedIndex` is immutable once built: a request takes one at its start and finishes on it, so a
swap to a new version never changes an answer half way through.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from ml.index.recommend import HistoryEncoder, LoadedIndex, Recommendation, load_version, recommend
from ml.models.checkpoints import history_encoder, load_checkpoint

logger = logging.getLogger(__name__)

QueryKind = Literal["user_vector", "model_history_encoder", "mean_item_vectors", "popularity"]


class NotFoundError(LookupError):
    """An unknown dataset, user or item: the API answers 404 with this message."""


class UnavailableError(RuntimeError):
    """The version cannot answer this kind of request (e.g. it has no user vectors): the API answers 409."""


@dataclass(frozen=True)
class Answer:
    """Ranked items and how they were found."""

    items: list[Recommendation]
    query: QueryKind
    unknown_items: list[str]
    excluded: int  # how many items were left out as seen or asked to be excluded


@dataclass(frozen=True)
class ServedIndex:
    """A loaded index version, its model's history encoder, unit item vectors and popularity order."""

    loaded: LoadedIndex
    encoder: HistoryEncoder | None
    encoder_problem: str | None  # why the model's own history encoder is not used, when it is not
    unit_index: faiss.Index  # exact inner product over the unit item vectors (no score-offset column): cosine
    popularity_rows: np.ndarray | None  # item rows, most interacted first (from the published histories)
    popularity_counts: np.ndarray | None  # interactions per item row
    loaded_at: datetime

    @property
    def dataset(self) -> str:
        """The dataset this version indexes."""
        return self.loaded.dataset

    @property
    def version(self) -> str:
        """The version's name (its folder)."""
        return self.loaded.version

    @property
    def model(self) -> str:
        """The model whose vectors the version holds."""
        return str(self.loaded.manifest.get("model_run", {}).get("model", "unknown"))

    def title(self, item_id: str) -> str | None:
        """The item's display title, if one was published."""
        return (self.loaded.titles or {}).get(item_id)

    def has_user(self, user_id: str) -> bool:
        """Whether the version holds a vector for this user."""
        return self.loaded.user_rows is not None and user_id in self.loaded.user_rows

    def user_ids(self) -> list[str]:
        """Every user with a vector (empty when the version has none)."""
        return list(self.loaded.user_rows or {})

    def history(self, user_id: str) -> list[str]:
        """The user's published history, oldest first; raises `NotFoundError` for an unknown user."""
        if not self.has_user(user_id):
            raise NotFoundError(f"unknown user {user_id!r} in {self.dataset} index {self.version}")
        return self.loaded.seen_by(user_id)

    def for_user(self, user_id: str, k: int, exclude_seen: bool = True) -> Answer:
        """The top `k` for a known user id by its published vector, leaving out its history if asked."""
        if self.loaded.user_rows is None:
            raise UnavailableError(f"{self.dataset} index {self.version} has no user vectors: post a history")
        seen = self.history(user_id) if exclude_seen else []
        items = recommend(self.loaded, user_id=user_id, history=seen, k=k, exclude_history=exclude_seen)
        return Answer(items=items, query="user_vector", unknown_items=[], excluded=len(set(seen)))

    def for_history(self, history: Sequence[str], k: int, exclude: Sequence[str] = ()) -> Answer:
        """The top `k` for an item history (oldest first) through the model's user tower; popularity if empty.

        Items the index does not hold are reported in `unknown_items` and skipped; the history and
        `exclude` are left out of the answer.
        """
        rows = self.loaded.item_rows
        unknown = list(dict.fromkeys(item for item in history if item not in rows))
        known = [item for item in history if item in rows]
        excluded = set(known) | {item for item in exclude if item in rows}
        if not known:
            return Answer(items=self.popular(k, excluded), query="popularity", unknown_items=unknown,
                          excluded=len(excluded))
        query: QueryKind = "model_history_encoder" if self.encoder is not None else "mean_item_vectors"
        items = recommend(self.loaded, history=known, k=k, history_encoder=self.encoder, exclude=list(exclude))
        return Answer(items=items, query=query, unknown_items=unknown, excluded=len(excluded))

    def popular(self, k: int, excluded: set[str]) -> list[Recommendation]:
        """The `k` most interacted items not in `excluded`, scored by their interaction counts."""
        if self.popularity_rows is None or self.popularity_counts is None:
            raise UnavailableError(f"{self.dataset} index {self.version} was published without user histories, so "
                                   "it has no popularity to fall back on: give at least one known item")
        picked: list[Recommendation] = []
        for row in self.popularity_rows:
            item = self.loaded.item_ids[row]
            if item in excluded:
                continue
            picked.append(Recommendation(item, float(self.popularity_counts[row]), self.title(item)))
            if len(picked) == k:
                break
        return picked

    def similar(self, item_id: str, k: int) -> list[Recommendation]:
        """The `k` items nearest `item_id` by cosine of the published item vectors (the item itself left out).

        Cosine, not the index's inner product: raw inner products favour items with large norms (the
        popular ones), which is right for ranking a user's next item but not for "items like this one".
        Exact (a flat faiss index over the unit vectors): under a millisecond at these catalogue sizes,
        on one faiss thread, where a numpy product would start BLAS threads in every request's thread.
        """
        row = self.loaded.item_rows.get(item_id)
        if row is None:
            raise NotFoundError(f"unknown item {item_id!r} in {self.dataset} index {self.version}")
        query = self.unit_index.reconstruct(row)[None, :]
        scores, rows = self.unit_index.search(query, min(k + 1, len(self.loaded.item_ids)))
        picked = [(float(score), int(found)) for score, found in zip(scores[0], rows[0], strict=True)
                  if found >= 0 and found != row][:k]
        return [Recommendation(self.loaded.item_ids[r], score, self.title(self.loaded.item_ids[r]))
                for score, r in picked]


def _unit_item_index(loaded: LoadedIndex) -> faiss.Index:
    vectors = loaded.item_vectors
    if loaded.manifest.get("score_offset_column"):
        vectors = vectors[:, :-1]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32))
    return index


def _popularity(loaded: LoadedIndex) -> tuple[np.ndarray | None, np.ndarray | None]:
    if loaded.user_histories is None:
        return None, None
    counts = np.zeros(len(loaded.item_ids), dtype=np.int64)
    for history in loaded.user_histories:
        for item in history:
            counts[loaded.item_rows[item]] += 1
    # Most interacted first; ties by row, so the fallback is deterministic.
    return np.lexsort((np.arange(len(counts)), -counts)), counts


def _model_encoder(loaded: LoadedIndex, checkpoints_root: Path) -> tuple[HistoryEncoder | None, str | None]:
    """The published model's user tower, or None and why not (the history path then averages item vectors)."""
    model_run = loaded.manifest.get("model_run", {})
    name, version = model_run.get("model"), model_run.get("checkpoint_version")
    if not name or not version:
        return None, "the manifest names no model checkpoint"
    try:
        return history_encoder(load_checkpoint(checkpoints_root, loaded.dataset, str(name), str(version))), None
    except (OSError, ValueError, KeyError) as error:
        # Recommending by user id and similar items need only the index; histories fall back, and say so.
        reason = f"checkpoint {name} {version}: {error}"
        logger.warning("%s index %s: no model history encoder (%s); histories use the mean of item vectors",
                       loaded.dataset, loaded.version, reason)
        return None, reason


def load_served(indexes_root: Path, checkpoints_root: Path, dataset: str, version: str) -> ServedIndex:
    """Load and verify one version (checksums, manifest, shapes) with its model; raises if it fails."""
    loaded = load_version(indexes_root, dataset, version)
    encoder, problem = _model_encoder(loaded, checkpoints_root)
    popularity_rows, popularity_counts = _popularity(loaded)
    return ServedIndex(loaded=loaded, encoder=encoder, encoder_problem=problem,
                       unit_index=_unit_item_index(loaded), popularity_rows=popularity_rows,
                       popularity_counts=popularity_counts, loaded_at=datetime.now(UTC))
