"""Embeddings cached by content hash in DuckDB: an unchanged text is never encoded twice by one model."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import duckdb
import numpy as np
import pyarrow as pa

from ml.data.embedding_store import vectors_from_arrow
from ml.data.warehouse import Connect

logger = logging.getLogger(__name__)

EMBEDDING_TABLE = "enrichment.text_embeddings"


class TextEncoder(Protocol):
    """Anything that turns texts into unit-norm vectors and names the model that did it."""

    model_id: str
    dim: int
    device: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 embeddings."""
        ...


@dataclass(frozen=True)
class CachedEncoding:
    """Embeddings for the requested texts, in order, and how many had to be computed."""

    vectors: np.ndarray
    encoded: int
    reused: int


def text_hash(text: str) -> str:
    """SHA-256 of a text's UTF-8 bytes (the cache key, with the model id)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ensure_embedding_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create the embedding cache table if it does not exist."""
    con.execute("create schema if not exists enrichment")
    con.execute(
        f"create table if not exists {EMBEDDING_TABLE} "
        "(model_id varchar not null, text_hash varchar not null, vector float[] not null, "
        "primary key (model_id, text_hash))"
    )


@dataclass(frozen=True)
class CacheFill:
    """What one `fill_cache` call did: texts encoded now, found already cached, and left for a later call."""

    encoded: int
    reused: int
    left: int


def _missing_hashes(con: duckdb.DuckDBPyConnection, model_id: str, unique: dict[str, str]) -> list[str]:
    """The hashes of `unique` (hash -> text, in request order) that the cache has no vector for."""
    con.register("_wanted", pa.table({"text_hash": list(unique)}))
    try:
        found = con.execute(
            f"select e.text_hash from {EMBEDDING_TABLE} e join _wanted w using (text_hash) where e.model_id = $model",
            {"model": model_id},
        ).fetchall()
    finally:
        con.unregister("_wanted")
    cached = {row[0] for row in found}
    return [digest for digest in unique if digest not in cached]


def fill_cache(
    connect: Connect, encoder: TextEncoder, texts: Sequence[str], max_new: int | None = None, batch_size: int = 1_024,
) -> CacheFill:
    """Encode the texts the cache lacks (the first `max_new` of them, in request order; None = all) and store them.

    The warehouse is opened only to look up and to store each chunk, never while encoding, so other
    processes (serving, a notebook) can use it in between.
    """
    if max_new is not None and max_new < 0:
        raise ValueError("max_new must be >= 0 (or None for no limit)")
    unique: dict[str, str] = {text_hash(text): text for text in texts}
    with connect() as con:
        ensure_embedding_table(con)
        missing = _missing_hashes(con, encoder.model_id, unique)
    todo = missing if max_new is None else missing[:max_new]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        vectors = encoder.encode([unique[digest] for digest in chunk])
        batch = pa.table({
            "model_id": [encoder.model_id] * len(chunk),
            "text_hash": chunk,
            "vector": pa.array(list(vectors.astype(np.float32)), type=pa.list_(pa.float32())),
        })
        with connect() as con:
            con.register("_new_vectors", batch)
            try:
                con.execute(f"insert into {EMBEDDING_TABLE} select * from _new_vectors")
            finally:
                con.unregister("_new_vectors")
        # Each chunk is committed as it lands, so a killed run keeps its work; log progress per chunk.
        logger.info("embeddings %s: %d/%d new texts encoded", encoder.model_id, start + len(chunk), len(todo))
    fill = CacheFill(encoded=len(todo), reused=len(unique) - len(missing), left=len(missing) - len(todo))
    logger.info("embeddings %s: %d encoded, %d reused, %d left for later", encoder.model_id, fill.encoded,
                fill.reused, fill.left)
    return fill


def read_cached(con: duckdb.DuckDBPyConnection, encoder: TextEncoder, texts: Sequence[str]) -> np.ndarray:
    """(len(texts), dim) cached vectors of `texts`, in order; a ValueError if any text is not cached yet."""
    if not texts:  # e.g. no user has a profile yet: an empty (0, dim) matrix, not a reshape error
        return np.zeros((0, encoder.dim), dtype=np.float32)
    hashes = [text_hash(text) for text in texts]
    con.register("_order", pa.table({"position": list(range(len(hashes))), "text_hash": hashes}))
    try:
        # Read back through Arrow: one flat float buffer, not millions of Python floats.
        table = con.execute(
            f"select e.vector from _order o join {EMBEDDING_TABLE} e "
            "on e.text_hash = o.text_hash and e.model_id = $model order by o.position",
            {"model": encoder.model_id},
        ).fetch_arrow_table()
    finally:
        con.unregister("_order")
    if table.num_rows != len(hashes):
        raise ValueError(f"{len(hashes) - table.num_rows} of {len(hashes)} texts have no cached {encoder.model_id} "
                         "vector yet")
    return vectors_from_arrow(table).reshape(len(texts), encoder.dim)


def encode_cached(
    connect: Connect, encoder: TextEncoder, texts: Sequence[str], batch_size: int = 1_024
) -> CachedEncoding:
    """Embeddings of `texts` (in order): cached ones read back, the rest encoded and stored in batches."""
    fill = fill_cache(connect, encoder, texts, batch_size=batch_size)
    with connect() as con:
        vectors = read_cached(con, encoder, texts)
    return CachedEncoding(vectors=vectors, encoded=fill.encoded, reused=fill.reused)
