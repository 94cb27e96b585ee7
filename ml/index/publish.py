"""Publish item indexes as immutable, checksummed versions; verify them against exact search; roll back.

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
listed, and CURRENT keeps pointing at the previous version. Earlier versions stay for rollback.
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
from ml.index.build import IndexConfig, apply_search_params, build_index

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
ITEM_IDS_FILE = "item_ids.json"
ITEM_TITLES_FILE = "item_titles.json"
ITEM_VECTORS_FILE = "item_vectors.npy"
USER_IDS_FILE = "user_ids.json"
USER_VECTORS_FILE = "user_vectors.npy"
USER_HISTORIES_FILE = "user_histories.json"
MANIFEST_FILE = "manifest.json"
RECALL_K = 10
STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True)
class VerificationReport:
    """What verification measured: recall@k of the index against exact search on sampled queries."""

    version: str
    recall: float
    min_recall: float
    k: int
    queries: int
    query_source: Literal["users", "items"]
    files_checked: int
    seconds: float


class IndexVerificationError(RuntimeError):
    """A version failed verification; `reason` says why, `file` names the file at fault (if one is)."""

    def __init__(self, reason: str, file: str | None = None, report: VerificationReport | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.file = file
        self.report = report


@dataclass(frozen=True)
class IndexContents:
    """One version's files, read back after their checksums and shapes were checked."""

    manifest: dict[str, Any]
    config: IndexConfig
    index: faiss.Index
    item_ids: list[str]
    item_vectors: np.ndarray
    user_ids: list[str] | None
    user_vectors: np.ndarray | None
    item_titles: list[str | None] | None = None
    user_histories: list[list[str]] | None = None


@dataclass(frozen=True)
class PublishedIndex:
    """A version that passed verification and is now current."""

    version: str
    path: Path
    manifest: dict[str, Any]
    report: VerificationReport


def index_folder(root: Path, dataset: str) -> VersionedFolder:
    """The versioned folder holding one dataset's published indexes."""
    return VersionedFolder(Path(root) / dataset)


def list_versions(root: Path, dataset: str) -> list[str]:
    """Every published version of `dataset`, oldest first."""
    return index_folder(root, dataset).versions()


def current_version(root: Path, dataset: str) -> str:
    """The version CURRENT names; raises `NoCurrentVersion` if nothing is published."""
    return index_folder(root, dataset).current()


# ---------------------------------------------------------------------------------------------- reading


def _fail(reason: str, file: str | None = None) -> IndexVerificationError:
    return IndexVerificationError(reason, file=file)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise _fail(f"{MANIFEST_FILE} is missing from {folder}", MANIFEST_FILE)
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(f"{MANIFEST_FILE} in {folder} is not valid JSON: {error}", MANIFEST_FILE) from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise _fail(f"{MANIFEST_FILE} in {folder} has no 'files' checksum table", MANIFEST_FILE)
    return manifest


def _check_files(folder: Path, manifest: dict[str, Any]) -> None:
    listed: dict[str, str] = manifest["files"]
    for name in sorted(listed):
        path = folder / name
        if not path.is_file():
            raise _fail(f"{name} is missing from {folder}", name)
        actual = sha256_file(path)
        if actual != listed[name]:
            raise _fail(
                f"{name} is corrupted: its sha256 {actual[:12]}... does not match the manifest's "
                f"{listed[name][:12]}... ({folder})", name,
            )
    # A version folder is immutable: anything added after publishing is as suspect as a changed file.
    for entry in sorted(folder.iterdir()):
        if entry.name != MANIFEST_FILE and entry.name not in listed:
            raise _fail(f"{entry.name} in {folder} is not listed in the manifest", entry.name)
    unlisted = sorted({INDEX_FILE, ITEM_IDS_FILE, ITEM_VECTORS_FILE} - set(listed))
    if unlisted:
        raise _fail(f"{unlisted[0]} is not listed in the manifest of {folder}", unlisted[0])
    if (USER_IDS_FILE in listed) != (USER_VECTORS_FILE in listed):
        raise _fail(f"{folder} must hold both or neither of {USER_IDS_FILE} and {USER_VECTORS_FILE}")
    if USER_HISTORIES_FILE in listed and USER_IDS_FILE not in listed:
        raise _fail(f"{USER_HISTORIES_FILE} in {folder} needs {USER_IDS_FILE}", USER_HISTORIES_FILE)


def _read_ids(path: Path) -> list[str]:
    try:
        ids = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(f"{path.name} is not valid JSON: {error}", path.name) from error
    if not isinstance(ids, list) or not all(isinstance(value, str) for value in ids):
        raise _fail(f"{path.name} must be a JSON list of string ids", path.name)
    if len(set(ids)) != len(ids):
        raise _fail(f"{path.name} has duplicate ids", path.name)
    return ids


def _read_titles(path: Path, count: int) -> list[str | None]:
    try:
        titles = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(f"{path.name} is not valid JSON: {error}", path.name) from error
    if not isinstance(titles, list) or len(titles) != count or \
            not all(title is None or isinstance(title, str) for title in titles):
        raise _fail(f"{path.name} must list {count} titles (strings or null)", path.name)
    return titles


def _read_histories(path: Path, users: int, items: set[str]) -> list[list[str]]:
    try:
        histories = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(f"{path.name} is not valid JSON: {error}", path.name) from error
    if not isinstance(histories, list) or len(histories) != users or not all(
            isinstance(history, list) and all(item in items for item in history) for history in histories):
        raise _fail(f"{path.name} must list {users} histories of indexed item ids", path.name)
    return histories


def _read_vectors(path: Path, rows: int, dim: int) -> np.ndarray:
    try:
        vectors = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise _fail(f"{path.name} is not a readable .npy array: {error}", path.name) from error
    if vectors.dtype != np.float32 or vectors.shape != (rows, dim):
        raise _fail(f"{path.name} holds {vectors.dtype} {vectors.shape}, expected float32 ({rows}, {dim})", path.name)
    return vectors


def read_version(folder: Path) -> IndexContents:
    """Read one version folder, checking every checksum, count and dimension; raises `IndexVerificationError`."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    _check_files(folder, manifest)
    try:
        config = IndexConfig.from_dict(manifest["index"])
        dim, count = int(manifest["dim"]), int(manifest["item_count"])
    except (KeyError, TypeError, ValueError) as error:
        raise _fail(f"{MANIFEST_FILE} in {folder} lacks a valid index config, dim or item_count: {error}",
                    MANIFEST_FILE) from error
    item_ids = _read_ids(folder / ITEM_IDS_FILE)
    if len(item_ids) != count:
        raise _fail(f"{ITEM_IDS_FILE} has {len(item_ids)} ids, the manifest says {count}", ITEM_IDS_FILE)
    item_vectors = _read_vectors(folder / ITEM_VECTORS_FILE, count, dim)
    try:
        index = faiss.read_index(str(folder / INDEX_FILE))
    except RuntimeError as error:
        raise _fail(f"{INDEX_FILE} cannot be read by faiss: {error}", INDEX_FILE) from error
    if index.ntotal != count or index.d != dim:
        raise _fail(f"{INDEX_FILE} holds {index.ntotal} vectors of dim {index.d}, the manifest says {count} x {dim}",
                    INDEX_FILE)
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise _fail(f"{INDEX_FILE} does not score by inner product", INDEX_FILE)
    apply_search_params(index, config)
    item_titles = None
    if ITEM_TITLES_FILE in manifest["files"]:
        item_titles = _read_titles(folder / ITEM_TITLES_FILE, count)
    user_ids = user_vectors = None
    if USER_IDS_FILE in manifest["files"]:
        user_ids = _read_ids(folder / USER_IDS_FILE)
        user_vectors = _read_vectors(folder / USER_VECTORS_FILE, len(user_ids), dim)
        if len(user_ids) != manifest.get("user_count"):
            raise _fail(f"{USER_IDS_FILE} has {len(user_ids)} ids, the manifest says {manifest.get('user_count')}",
                        USER_IDS_FILE)
    user_histories = None
    if USER_HISTORIES_FILE in manifest["files"] and user_ids is not None:
        user_histories = _read_histories(folder / USER_HISTORIES_FILE, len(user_ids), set(item_ids))
    return IndexContents(manifest, config, index, item_ids, item_vectors, user_ids, user_vectors, item_titles,
                         user_histories)


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


def rollback(root: Path, dataset: str, to_version: str | None = None) -> str:
    """Point CURRENT at the version before it (or at `to_version`) after checking its files; returns it."""
    store = index_folder(root, dataset)
    versions = store.versions()
    current = store.current()
    if to_version is None:
        position = versions.index(current)
        if position == 0:
            raise ValueError(f"no version of {dataset} before {current} to roll back to (versions: {versions})")
        to_version = versions[position - 1]
    elif to_version not in versions:
        raise ValueError(f"no version {to_version!r} of {dataset} (versions: {versions})")
    # Matching checksums mean the same bytes that passed verification at publish time.
    read_version(store.path(to_version))
    store.point_to(to_version)
    logger.warning("rolled back index of %s from %s to %s", dataset, current, to_version)
    return to_version
