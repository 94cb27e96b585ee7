"""Publish item indexes as immutable, checksummed versions and verify them against exact search.

Layout: `<root>/<dataset>/<version>/` holds

    index.faiss         the faiss index (row i = item_ids[i])
    item_ids.json       JSON list: faiss row -> item id
    item_titles.json    optional JSON list: faiss row -> display title (or null), so serving never opens the warehouse
    item_vectors.npy    the indexed vectors, for exact-search verification and for embedding item histories
    user_ids.json       optional, with user_vectors.npy: recommend by user id
    user_vectors.npy
    user_histories.json optional JSON list aligned with user_ids: each user's known items, oldest first,
                        so serving can leave out what a user has seen and show their history
    manifest.json       dataset, model run, metrics, dim, counts, index kind and parameters, creation time,
                        whether the last vector column is a per-item score offset (`score_offset_column`),
                        and the sha256 of every other file in the folder

and `<root>/<dataset>/CURRENT` names the version being served. Version names are a UTC timestamp
plus a digest of the inputs (`20250101T120000.000000Z-1a2b3c4d`), so they sort oldest first.

A new version is written and verified in a hidden staging folder (see `VersionedFolder.write`) and
only renamed into place once verification passes; a version that fails is deleted and never
listed, and CURRENT keeps pointing at the previous version. Earlier versions stay for rollback
(`ml.index.store.rollback`); `ml.index.store` reads and checks what this module writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from ml.data.versioned import VersionedFolder, sha256_file, write_json
from ml.index.build import IndexConfig, build_index
from ml.index.store import (
    INDEX_FILE,
    ITEM_IDS_FILE,
    ITEM_TITLES_FILE,
    ITEM_VECTORS_FILE,
    MANIFEST_FILE,
    USER_HISTORIES_FILE,
    USER_IDS_FILE,
    USER_VECTORS_FILE,
    IndexVerificationError,
    VerificationReport,
    index_folder,
    read_version,
)

logger = logging.getLogger(__name__)

RECALL_K = 10
STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True)
class PublishedIndex:
    """A version that passed verification and is now current."""

    version: str
    path: Path
    manifest: dict[str, Any]
    report: VerificationReport


# ---------------------------------------------------------------------------------------------- verifying


def recall_against_exact(index: faiss.Index, item_vectors: np.ndarray, queries: np.ndarray, k: int = RECALL_K) -> float:
    """Mean recall@k of `index` against exact inner-product search over `item_vectors`.

    Tie-aware: a returned item counts as a hit when its exact score reaches the exact k-th best score
    (within float32 rounding), so equal vectors (duplicate items) or a different summation order in
    faiss and numpy cannot make an exact index look approximate.
    """
    k = min(k, len(item_vectors))
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    hits = 0
    chunk = max(1, (1 << 24) // len(item_vectors))  # bound the exact score matrix to ~64 MB
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ item_vectors.T
        kth_best = np.partition(scores, -k, axis=1)[:, -k]
        tolerance = 1e-5 * np.abs(scores).max(axis=1)
        for row, ids in enumerate(found[start:start + chunk]):
            ids = np.unique(ids[ids >= 0])
            hits += min(k, int((scores[row, ids] >= kth_best[row] - tolerance[row]).sum()))
    return hits / (k * len(queries))


def verify_index(
    folder: Path, sample_users: int = 500, seed: int = 0, min_recall: float | None = None, k: int = RECALL_K,
) -> VerificationReport:
    """Check a version folder's files, then its recall@k against exact search; raises `IndexVerificationError`.

    Queries are a seeded sample of the stored user vectors, or of the item vectors when no users were
    published. flat_ip must reach recall 1.0; approximate kinds `min_recall`, else the manifest's.
    """
    if sample_users < 1:
        raise ValueError(f"sample_users must be positive, not {sample_users}")
    started = time.perf_counter()
    contents = read_version(folder)
    if contents.user_vectors is not None and len(contents.user_vectors):
        source: Literal["users", "items"] = "users"
        pool = contents.user_vectors
    else:
        source, pool = "items", contents.item_vectors
    rows = np.sort(np.random.default_rng(seed).choice(len(pool), min(sample_users, len(pool)), replace=False))
    recall = recall_against_exact(contents.index, contents.item_vectors, pool[rows], k)
    required = 1.0 if contents.config.kind == "flat_ip" else (
        contents.config.min_recall if min_recall is None else min_recall
    )
    report = VerificationReport(
        version=str(contents.manifest.get("version", Path(folder).name)), recall=recall, min_recall=required,
        k=min(k, len(contents.item_ids)), queries=len(rows), query_source=source,
        files_checked=len(contents.manifest["files"]), seconds=time.perf_counter() - started,
    )
    if recall < required:
        raise IndexVerificationError(
            f"{contents.config.kind} index recall@{report.k} against exact search is {recall:.4f} on "
            f"{report.queries} sampled {source}, below the required {required}", report=report,
        )
    logger.info("verified index %s: recall@%d %.4f on %d %s in %.2fs", report.version, report.k, recall,
                report.queries, source, report.seconds)
    return report


# ---------------------------------------------------------------------------------------------- publishing


def _content_digest(
    item_ids: Sequence[str], item_vectors: np.ndarray, user_ids: Sequence[str] | None, user_vectors: np.ndarray | None,
    metadata: dict[str, Any], config: IndexConfig, user_histories: list[list[str]] | None = None,
) -> str:
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    digest.update(json.dumps(metadata, sort_keys=True, default=str).encode())
    digest.update("\0".join(item_ids).encode())
    digest.update(item_vectors.tobytes())
    if user_ids is not None and user_vectors is not None:
        digest.update(b"\1" + "\0".join(user_ids).encode())
        digest.update(user_vectors.tobytes())
    if user_histories is not None:
        digest.update(b"\2" + json.dumps(user_histories).encode())
    return digest.hexdigest()


def _new_version_name(store: VersionedFolder, digest: str, now: datetime) -> str:
    """A timestamped name that sorts after every existing version, even if the clock stepped back."""
    for existing in reversed(store.versions()):
        try:
            latest = datetime.strptime(existing.split("-", 1)[0], STAMP_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue  # not one of ours; ignore it
        now = max(now, latest + timedelta(microseconds=1))
        break
    return f"{now.strftime(STAMP_FORMAT)}-{digest[:8]}"


def _checked_ids(ids: Sequence[str], vectors: np.ndarray, what: str) -> list[str]:
    ids = [str(value) for value in ids]
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} {what} ids but {what} vectors of shape {vectors.shape}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what} ids must be unique")
    return ids


def publish_index(
    root: Path,
    dataset: str,
    item_ids: Sequence[str],
    item_vectors: np.ndarray,
    user_ids: Sequence[str] | None,
    user_vectors: np.ndarray | None,
    metadata: dict[str, Any],
    config: IndexConfig | None = None,
    verify_users: int = 500,
    item_titles: Sequence[str | None] | None = None,
    user_histories: Sequence[Sequence[str]] | None = None,
    score_offset_column: bool = False,
) -> PublishedIndex:
    """Build, write and verify a new index version of `dataset`, then make it current.

    `metadata["metrics"]` goes to the manifest's `metrics`; every other key (model name, MLflow run
    id, ...) to its `model_run`. `item_titles` (aligned with `item_ids`) and `user_histories` (aligned
    with `user_ids`, item ids oldest first) travel with the version, so serving needs nothing else.
    `score_offset_column` says the vectors' last column is a per-item score offset (a popularity
    adjustment), which item-to-item similarity leaves out. On a failed verification nothing is
    published and `IndexVerificationError` is raised with CURRENT unchanged.
    """
    if verify_users < 1:
        raise ValueError(f"verify_users must be positive, not {verify_users}")
    item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    item_ids = _checked_ids(item_ids, item_vectors, "item")
    if (user_ids is None) != (user_vectors is None):
        raise ValueError("give both user_ids and user_vectors, or neither")
    if user_ids is not None and user_vectors is not None:
        user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
        user_ids = _checked_ids(user_ids, user_vectors, "user")
        if user_vectors.shape[1] != item_vectors.shape[1]:
            raise ValueError(f"user vectors have dim {user_vectors.shape[1]}, item vectors {item_vectors.shape[1]}")
    if item_titles is not None:
        item_titles = [None if title is None else str(title) for title in item_titles]
        if len(item_titles) != len(item_ids):
            raise ValueError(f"{len(item_titles)} item titles for {len(item_ids)} items")
    if user_histories is not None:
        if user_ids is None or len(user_histories) != len(user_ids):
            raise ValueError("user_histories need user_ids, one history per user")
        user_histories = [[str(item) for item in history] for history in user_histories]
        known = set(item_ids)
        unknown = sorted({item for history in user_histories for item in history} - known)
        if unknown:
            raise ValueError(f"{len(unknown)} history item(s) are not indexed items: {unknown[:5]}")
    config = (config or IndexConfig()).resolved(len(item_ids))
    index = build_index(item_vectors, config)

    store = index_folder(root, dataset)
    created = datetime.now(UTC)
    digest = _content_digest(item_ids, item_vectors, user_ids, user_vectors, metadata, config, user_histories)
    version = _new_version_name(store, digest, created)
    reports: list[VerificationReport] = []

    def write(folder: Path) -> None:
        faiss.write_index(index, str(folder / INDEX_FILE))
        (folder / ITEM_IDS_FILE).write_text(json.dumps(item_ids) + "\n")
        np.save(folder / ITEM_VECTORS_FILE, item_vectors, allow_pickle=False)
        if item_titles is not None:
            (folder / ITEM_TITLES_FILE).write_text(json.dumps(item_titles, ensure_ascii=False) + "\n")
        if user_ids is not None and user_vectors is not None:
            (folder / USER_IDS_FILE).write_text(json.dumps(user_ids) + "\n")
            np.save(folder / USER_VECTORS_FILE, user_vectors, allow_pickle=False)
        if user_histories is not None:
            (folder / USER_HISTORIES_FILE).write_text(json.dumps(user_histories) + "\n")
        write_json(folder / MANIFEST_FILE, {
            "dataset": dataset,
            "version": version,
            "created_at": created.isoformat(),
            "content_digest": digest,
            "model_run": {key: value for key, value in metadata.items() if key != "metrics"},
            "metrics": metadata.get("metrics", {}),
            "dim": int(item_vectors.shape[1]),
            "score_offset_column": score_offset_column,
            "item_count": len(item_ids),
            "user_count": len(user_ids) if user_ids is not None else 0,
            "index": config.to_dict(),
            "faiss_version": faiss.__version__,
            "files": {path.name: sha256_file(path) for path in sorted(folder.iterdir())},
        })
        # Verify the staged folder: if this raises, VersionedFolder.write deletes it before it is ever listed.
        reports.append(verify_index(folder, sample_users=verify_users, seed=config.seed))

    try:
        path = store.write(version, write)
    except IndexVerificationError as error:
        logger.error("index %s for %s failed verification and was not published: %s", version, dataset, error)
        raise
    store.point_to(version)
    logger.info("published index %s for %s (%s, %d items)", version, dataset, config.kind, len(item_ids))
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    return PublishedIndex(version=version, path=path, manifest=manifest, report=reports[0])
