"""Read stored item code paths (`enrichment.semantic_codes` / `behaviour_codes`) back, with their features."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ml.data.embedding_store import read_item_content
from ml.models.eager import StreamCodes


def read_item_codes(con: duckdb.DuckDBPyConnection, table: str, dataset: str, item_ids: Sequence[str]) -> np.ndarray:
    """(len(item_ids), depth) int64 code paths in `item_ids` order, -1 past each path's end.

    Raises when an item has no code path or the table holds items outside `item_ids` (codes built
    over another vocabulary: rematerialize them), so a model never trains on a misaligned code table.
    """
    rows = con.execute(f"select item_id, code_path from {table} where dataset = ?", [dataset]).fetchall()
    paths = {str(item): list(path) for item, path in rows}
    missing = [item for item in item_ids if item not in paths]
    extra = set(paths) - set(item_ids)
    if missing or extra:
        raise ValueError(f"{table} for {dataset} does not cover exactly the item vocabulary ({len(missing)} items "
                         f"without a code, e.g. {missing[:3]}; {len(extra)} unknown items): rematerialize it")
    depth = max((len(path) for path in paths.values()), default=0)
    codes = np.full((len(item_ids), depth), -1, dtype=np.int64)
    for row, item in enumerate(item_ids):
        path = paths[item]
        if not path or min(path) < 0:
            raise ValueError(f"{table}: item {item} of {dataset} has an empty or negative code path {path}")
        codes[row, : len(path)] = path
    return codes


def read_stream_codes(
    con: duckdb.DuckDBPyConnection, embeddings_root: Path, dataset: str, item_ids: Sequence[str],
    sources: dict[str, tuple[str, str]],
) -> tuple[dict[str, StreamCodes], dict[str, Any]]:
    """Each stream's codes (from its code table) and global features (its current embedding set), and provenance.

    `sources` maps a stream to (code table, embedding set name). Provenance names, per stream, the
    embedding set, version and encoder read and the code depth, for MLflow params and the checkpoint.
    """
    streams: dict[str, StreamCodes] = {}
    provenance: dict[str, Any] = {}
    for stream, (table, embedding_set) in sources.items():
        codes = read_item_codes(con, table, dataset, item_ids)
        stored = read_item_content(embeddings_root, dataset, embedding_set, item_ids)
        # Hierarchical k-means numbers children 0..k-1: the largest code + 1 is a branching that admits them all.
        streams[stream] = StreamCodes(codes=codes, features=np.asarray(stored.vectors), branching=int(codes.max()) + 1)
        provenance.update({f"{stream}_{key}": value for key, value in stored.provenance().items()})
        provenance[f"{stream}_code_depth"] = int(codes.shape[1])
    return streams, provenance
