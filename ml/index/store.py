"""Read and check the versioned index store: manifests, checksums, file shapes, versions, CURRENT and rollback."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from ml.data.versioned import VersionedFolder, sha256_file
from ml.index.build import IndexConfig, apply_search_params

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
ITEM_IDS_FILE = "item_ids.json"
ITEM_TITLES_FILE = "item_titles.json"
ITEM_VECTORS_FILE = "item_vectors.npy"
USER_IDS_FILE = "user_ids.json"
USER_VECTORS_FILE = "user_vectors.npy"
USER_HISTORIES_FILE = "user_histories.json"
MANIFEST_FILE = "manifest.json"


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
