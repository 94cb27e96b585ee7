"""Embeddings on disk: one Parquet file (ids, vectors, extra columns) per content version, per dataset and name.

Layout: `<root>/<dataset>/<name>/<version>/embeddings.parquet` with a `manifest.json` beside it
(model id, dimension, row count, file checksum, creation time), and `<root>/<dataset>/<name>/CURRENT`
naming the version downstream steps read. The version is a digest of the content, so a rerun that
produces the same vectors points at the same version and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ml.data.versioned import VersionedFolder, sha256_file, write_json

EMBEDDINGS_FILE = "embeddings.parquet"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class StoredEmbeddings:
    """Embeddings read back from the store, in stored order."""

    ids: list[str]
    vectors: np.ndarray
    columns: dict[str, list[Any]]
    manifest: dict[str, Any]
    path: Path

    def provenance(self) -> dict[str, str]:
        """Which set, version and encoder these are: what a model that read them logs and keeps in its checkpoint."""
        return {"content": self.path.parent.name, "content_version": self.path.name,
                "content_model": str(self.manifest.get("model_id", ""))}


def vectors_from_arrow(table: pa.Table, column: str = "vector") -> np.ndarray:
    """A list<float> column as an (n_rows, dim) float32 matrix, through one flat buffer (no Python floats)."""
    flat = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(table.num_rows, -1)


def embeddings_folder(root: Path, dataset: str, name: str) -> VersionedFolder:
    """The versioned folder of one embedding set of one dataset."""
    return VersionedFolder(root / dataset / name)


def _content_version(model_id: str, ids: Sequence[str], vectors: np.ndarray, columns: dict[str, list[Any]]) -> str:
    digest = hashlib.sha256(model_id.encode())
    digest.update("\0".join(ids).encode())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    for column in sorted(columns):
        digest.update(f"{column}={columns[column]!r}".encode())
    return digest.hexdigest()[:16]


def write_embeddings(
    root: Path, dataset: str, name: str, ids: Sequence[str], vectors: np.ndarray, model_id: str,
    columns: dict[str, list[Any]] | None = None,
) -> Path:
    """Store `vectors` (one row per id) as the current version of `name` for `dataset`; returns its folder."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    columns = columns or {}
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids but vectors of shape {vectors.shape}")
    if len(set(ids)) != len(ids):
        raise ValueError("embedding ids must be unique")
    for column, values in columns.items():
        if len(values) != len(ids):
            raise ValueError(f"column {column!r} has {len(values)} values for {len(ids)} ids")
    version = _content_version(model_id, ids, vectors, columns)

    def write(folder: Path) -> None:
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        table = pa.table({
            "id": pa.array(list(ids), type=pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            **{column: pa.array(values) for column, values in columns.items()},
        })
        pq.write_table(table, folder / EMBEDDINGS_FILE)
        write_json(folder / MANIFEST_FILE, {
            "dataset": dataset, "name": name, "version": version, "model_id": model_id,
            "dim": int(vectors.shape[1]), "count": len(ids), "columns": sorted(columns),
            "sha256": sha256_file(folder / EMBEDDINGS_FILE), "created_at": datetime.now(UTC).isoformat(),
        })

    store = embeddings_folder(root, dataset, name)
    folder = store.write(version, write)
    store.point_to(version)
    return folder


def read_embeddings(root: Path, dataset: str, name: str, version: str | None = None) -> StoredEmbeddings:
    """The current (or a given) version of `name` for `dataset`."""
    store = embeddings_folder(root, dataset, name)
    folder = store.path(version or store.current())
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    if sha256_file(folder / EMBEDDINGS_FILE) != manifest.get("sha256"):
        raise ValueError(f"embeddings {folder} are corrupted: {EMBEDDINGS_FILE} does not match its manifest checksum")
    table = pq.read_table(folder / EMBEDDINGS_FILE)
    vectors = vectors_from_arrow(table).reshape(table.num_rows, manifest["dim"])
    extra = {column: table.column(column).to_pylist() for column in manifest["columns"]}
    return StoredEmbeddings(table.column("id").to_pylist(), vectors, extra, manifest, folder)


def read_item_content(root: Path, dataset: str, name: str, item_ids: Sequence[str]) -> StoredEmbeddings:
    """The current `name` item embeddings of `dataset`, checked to hold exactly `item_ids`, in that order.

    Raises `NoCurrentVersion` when none is published yet, ValueError when the ids differ (a model
    row i must be item i of the interaction vocabulary).
    """
    stored = read_embeddings(root, dataset, name)
    if stored.ids != list(item_ids):
        raise ValueError(f"{name} embeddings of {dataset} ({stored.path}) do not cover exactly the interaction "
                         "vocabulary; rematerialize them")
    return stored
