"""Content embedding assets: sentence and frozen-LLM embeddings of item texts, and of LLM profiles, per dataset.

Every text goes through the content-hash cache in DuckDB, so unchanged texts are never encoded
twice by one model; the vectors are published as versioned Parquet (see ml/data/embedding_store.py)
with the item or user ids, and the asset metadata names the version folder.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
from pydantic import Field

from ml.data.embedding_store import write_embeddings
from ml.data.semantic_vectors import (
    HISTORY_MEAN_ITEMS,
    ITEM_PROFILE,
    ITEM_TEXT,
    USER_PROFILE,
    history_mean_vectors,
)
from ml.data.warehouse import Connect
from ml.encoders.cache import CachedEncoding, TextEncoder, encode_cached, fill_cache, read_cached
from ml.encoders.llm import FrozenLLMEncoder
from ml.encoders.sentence import SentenceEncoder
from ml.llm.weights import PACKAGED_SMOLLM2, resolve_causal_lm
from ml.profiles.inputs import load_profile_inputs
from orchestration.assets.profiles import ITEM_CATALOG, item_profiles, published_summaries, user_profiles
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, ArtifactStoreResource, WarehouseResource

# Names of the embedding sets in the store (downstream assets read them by these names; the
# semantic-vector reader of the graph models names three of them too, so they are defined there).
ITEM_LLM = "item_llm"


class SentenceEmbeddingConfig(dg.Config):
    """Sentence encoder settings (launchpad-editable)."""

    # 16, not 64: length-sorted batches of 16 pad less, 10.3 s against 12.2 s for 1,500 Beauty item texts
    # on the 2 cores (256: 21 s); the vectors are the same up to float rounding.
    batch_size: int = 16
    device: str = "auto"


class LLMEmbeddingConfig(dg.Config):
    """Frozen causal LM encoder settings (LEARN's CEX)."""

    model: str = Field(default=PACKAGED_SMOLLM2, description="Packaged name, a .gguf file or a local HF folder.")
    max_length: int = Field(
        default=64, description="Token cap per text. Beauty item texts average about 30 tokens, so 64 cuts few; "
        "the cap bounds CPU time (about 8 texts/s on 2 cores for SmolLM2-135M).",
    )
    batch_size: int = 8
    device: str = "auto"
    max_new_texts: int | None = Field(
        default=128, ge=0,
        description="Budget of texts to encode per run (the cache keeps them, so runs add up); null = every "
        "missing text. The set is published once every item is encoded: about 10 s per 128 texts on 2 CPU "
        "cores (13 texts/s measured in a cold `make run`), so amazon-beauty's 12,082 distinct texts fill over "
        "95 runs, or one run with null (about 15 min); on a GPU set null. No quick-preset model reads the set "
        "until it is complete, and 128 keeps the cold `make run` inside its 20 minutes.",
    )


@dataclass(frozen=True)
class PublishedEmbeddings:
    """What encoding and publishing one embedding set did."""

    folder: Path
    encoding: CachedEncoding
    seconds: float


def _encode_and_publish(
    connect: Connect, encoder: TextEncoder, root: Path, dataset: str, name: str, ids: list[str],
    texts: list[str], columns: dict[str, list[Any]] | None = None,
) -> PublishedEmbeddings:
    """Encode `texts` through the cache and publish them under `name` for `dataset`."""
    start = time.perf_counter()
    encoding = encode_cached(connect, encoder, texts)
    seconds = time.perf_counter() - start
    folder = write_embeddings(root, dataset, name, ids, encoding.vectors, encoder.model_id, columns)
    return PublishedEmbeddings(folder, encoding, seconds)


def _metadata(published: PublishedEmbeddings, encoder: TextEncoder) -> dict[str, Any]:
    rows = len(published.encoding.vectors)
    return {
        "dagster/row_count": rows,
        "path": dg.MetadataValue.path(str(published.folder)),
        "version": published.folder.name,
        "model_id": encoder.model_id,
        "dim": encoder.dim,
        "device": encoder.device,
        "encoded": published.encoding.encoded,
        "reused_from_cache": published.encoding.reused,
        "texts_per_second": round(rows / published.seconds, 2) if published.seconds > 0 else 0.0,
    }


def _item_texts(con: duckdb.DuckDBPyConnection, dataset: str) -> tuple[list[str], list[str]]:
    rows = con.execute(
        "select item_id, item_text from marts.item_catalog where dataset = $dataset and in_interactions "
        "order by item_id",
        {"dataset": dataset},
    ).fetchall()
    if not rows:
        raise dg.Failure(f"no interacted items in marts.item_catalog for {dataset!r}: materialize the data layer")
    return [item for item, _ in rows], [text for _, text in rows]


def _embed_item_texts(
    context: dg.AssetExecutionContext, encoder: TextEncoder, name: str, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, max_new: int | None = None,
) -> dg.MaterializeResult:
    """Encode every interacted item's catalog text with `encoder` (at most `max_new` new ones) and publish `name`.

    The set is published only once every item has a vector: a partial set would hand the models a
    catalogue with holes, so when the budget runs out first the current version (if any) stays, the
    cache keeps this run's work, and the metadata says how much is left.
    """
    dataset = context.partition_key
    with warehouse.connect(read_only=True) as con:
        ids, texts = _item_texts(con, dataset)
    start = time.perf_counter()
    fill = fill_cache(warehouse.connect, encoder, texts, max_new)  # opens the warehouse per chunk only
    seconds = time.perf_counter() - start
    progress = {"left_for_later_runs": fill.left, "coverage": round(1 - fill.left / len(set(texts)), 4)}
    if fill.left:
        context.log.warning("%s %s: %d texts left to encode after this run's budget of %s; materialize again "
                            "to publish it", dataset, name, fill.left, max_new)
        return dg.MaterializeResult(metadata={
            "complete": False, "encoded": fill.encoded, "reused_from_cache": fill.reused, **progress,
            "model_id": encoder.model_id, "device": encoder.device,
            "texts_per_second": round(fill.encoded / seconds, 2) if seconds > 0 else 0.0,
        })
    with warehouse.connect(read_only=True) as con:
        encoding = CachedEncoding(read_cached(con, encoder, texts), fill.encoded, fill.reused)
    folder = write_embeddings(artifacts.embeddings_root(), dataset, name, ids, encoding.vectors, encoder.model_id)
    published = PublishedEmbeddings(folder, encoding, seconds)
    return dg.MaterializeResult(metadata={"complete": True, **progress, **_metadata(published, encoder)})


@dg.asset(
    deps=[ITEM_CATALOG],
    group_name="enrichment",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="pytorch",
)
def item_text_embeddings(
    context: dg.AssetExecutionContext, config: SentenceEmbeddingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """all-MiniLM-L6-v2 embeddings of each interacted item's catalog text, cached by content hash."""
    encoder = SentenceEncoder(device=config.device, batch_size=config.batch_size)
    return _embed_item_texts(context, encoder, ITEM_TEXT, warehouse, artifacts)


@dg.asset(
    deps=[ITEM_CATALOG],
    group_name="enrichment",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="pytorch",
)
def item_llm_embeddings(
    context: dg.AssetExecutionContext, config: LLMEmbeddingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """LEARN CEX embeddings: a frozen causal LM's last-layer states, mean-pooled and L2-normalized, per item text."""
    model_dir = resolve_causal_lm(config.model, artifacts.model_cache_dir())
    encoder = FrozenLLMEncoder(model_dir, device=config.device, batch_size=config.batch_size,
                               max_length=config.max_length)
    return _embed_item_texts(context, encoder, ITEM_LLM, warehouse, artifacts, config.max_new_texts)


@dg.asset(
    deps=[item_profiles, user_profiles],
    group_name="enrichment",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="pytorch",
)
def profile_embeddings(
    context: dg.AssetExecutionContext, config: SentenceEmbeddingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """Sentence embeddings of item and user profile summaries; items without one use their catalog text."""
    dataset = context.partition_key
    encoder = SentenceEncoder(device=config.device, batch_size=config.batch_size)
    root = artifacts.embeddings_root()
    with warehouse.connect(read_only=True) as con:
        item_ids, item_texts = _item_texts(con, dataset)
        item_summaries = published_summaries(con, "item", dataset)
        user_summaries = published_summaries(con, "user", dataset)
        inputs = load_profile_inputs(con, dataset)
    item_sources = ["profile" if item in item_summaries else "catalog_text" for item in item_ids]
    items = _encode_and_publish(
        warehouse.connect, encoder, root, dataset, ITEM_PROFILE, item_ids,
        [item_summaries.get(item, text) for item, text in zip(item_ids, item_texts, strict=True)],
        {"source": item_sources},
    )
    user_ids = sorted(inputs.train_by_user)
    profiled = [user for user in user_ids if user in user_summaries]
    encoding = encode_cached(warehouse.connect, encoder, [user_summaries[user] for user in profiled])
    # A user without a profile is represented by their recent training items (each a profile or its
    # catalog text): the mean of those item vectors. Encoding a text of their titles instead would
    # cost about 10 minutes per 22k users on CPU and restate the same items.
    position = {item: row for row, item in enumerate(item_ids)}
    fallback_users = [user for user in user_ids if user not in user_summaries]
    fallback = history_mean_vectors(
        [[position[row.item_id] for row in inputs.train_by_user[user][-HISTORY_MEAN_ITEMS:]]
         for user in fallback_users],
        items.encoding.vectors,
    )
    vectors = dict(zip(profiled, encoding.vectors, strict=True)) | dict(zip(fallback_users, fallback, strict=True))
    user_sources = ["profile" if user in user_summaries else "history_mean" for user in user_ids]
    users_folder = write_embeddings(root, dataset, USER_PROFILE, user_ids, np.stack([vectors[u] for u in user_ids]),
                                    encoder.model_id, {"source": user_sources})
    item_fallbacks = item_sources.count("catalog_text")
    user_fallbacks = user_sources.count("history_mean")
    context.log.info("%s: %d/%d items fell back to catalog text, %d/%d users to their items' mean", dataset,
                     item_fallbacks, len(item_ids), user_fallbacks, len(user_ids))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(item_ids) + len(user_ids),
        "item_path": dg.MetadataValue.path(str(items.folder)),
        "user_path": dg.MetadataValue.path(str(users_folder)),
        "model_id": encoder.model_id,
        "dim": encoder.dim,
        "item_profile_coverage": 1 - item_fallbacks / len(item_ids),
        "user_profile_coverage": 1 - user_fallbacks / len(user_ids) if user_ids else 0.0,
        "items_on_catalog_text_fallback": item_fallbacks,
        "users_on_history_mean_fallback": user_fallbacks,
        "encoded": items.encoding.encoded + encoding.encoded,
        "reused_from_cache": items.encoding.reused + encoding.reused,
    })
