"""Enrichment assets: sentence embeddings of item texts and EAGER semantic codes, per dataset partition."""

import time

import dagster as dg
import duckdb
import pyarrow as pa
from dagster_dbt import get_asset_key_for_model

from ml.codes.hierarchical_kmeans import HierarchicalKMeansConfig, hierarchical_codes
from ml.data.warehouse import transaction
from ml.encoders.cache import encode_cached, vectors_from_arrow
from ml.encoders.sentence import SentenceEncoder
from orchestration.assets.dbt import data_layer_dbt
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, WarehouseResource

ITEM_CATALOG = get_asset_key_for_model([data_layer_dbt], "item_catalog")


class SentenceEmbeddingConfig(dg.Config):
    """Sentence encoder settings (launchpad-editable)."""

    batch_size: int = 64
    device: str = "auto"


class SemanticCodesConfig(dg.Config):
    """Hierarchical k-means settings (EAGER uses k = 256 children per node)."""

    branching: int = 256
    balanced: bool = False
    seed: int = 0


def _replace_partition(con: duckdb.DuckDBPyConnection, table: str, dataset: str, insert_sql: str,
                       params: dict[str, str]) -> None:
    """Delete a dataset's rows of `table` and insert the new ones in one transaction (idempotent reruns)."""
    with transaction(con):
        con.execute(f"delete from {table} where dataset = $dataset", {"dataset": dataset})
        con.execute(insert_sql, {"dataset": dataset, **params})


@dg.asset(
    deps=[ITEM_CATALOG],
    group_name="enrichment",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="pytorch",
)
def item_text_embeddings(
    context: dg.AssetExecutionContext, config: SentenceEmbeddingConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """all-MiniLM-L6-v2 embeddings of each interacted item's catalog text, cached by content hash."""
    dataset = context.partition_key
    encoder = SentenceEncoder(device=config.device, batch_size=config.batch_size)
    with warehouse.connect() as con:
        rows = con.execute(
            "select item_id, item_text from marts.item_catalog where dataset = $dataset and in_interactions "
            "order by item_id",
            {"dataset": dataset},
        ).fetchall()
        start = time.perf_counter()
        encoding = encode_cached(con, encoder, [text for _, text in rows])
        seconds = time.perf_counter() - start
        con.execute(
            "create table if not exists enrichment.item_text_embeddings "
            "(dataset varchar not null, item_id varchar not null, model_id varchar not null, vector float[] not null)"
        )
        batch = pa.table({
            "item_id": [item_id for item_id, _ in rows],
            "vector": pa.array(list(encoding.vectors), type=pa.list_(pa.float32())),
        })
        con.register("_item_vectors", batch)
        try:
            _replace_partition(
                con, "enrichment.item_text_embeddings", dataset,
                "insert into enrichment.item_text_embeddings "
                "select $dataset, item_id, $model, vector from _item_vectors",
                {"model": encoder.model_id},
            )
        finally:
            con.unregister("_item_vectors")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(rows),
        "model_id": encoder.model_id,
        "dim": encoder.dim,
        "device": encoder.device,
        "encoded": encoding.encoded,
        "reused_from_cache": encoding.reused,
        "texts_per_second": len(rows) / seconds if seconds > 0 else 0.0,
    })


@dg.asset(
    deps=[item_text_embeddings],
    group_name="enrichment",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="faiss",
)
def semantic_codes(
    context: dg.AssetExecutionContext, config: SemanticCodesConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """EAGER semantic codes: hierarchical k-means over the item text embeddings, one unique path per item."""
    dataset = context.partition_key
    with warehouse.connect() as con:
        table = con.execute(
            "select item_id, vector from enrichment.item_text_embeddings where dataset = $dataset order by item_id",
            {"dataset": dataset},
        ).fetch_arrow_table()
        if table.num_rows == 0:
            raise dg.Failure(f"no item text embeddings for {dataset!r}")
        vectors = vectors_from_arrow(table)
        codes = hierarchical_codes(
            vectors, HierarchicalKMeansConfig(branching=config.branching, balanced=config.balanced, seed=config.seed)
        )
        item_ids = table.column("item_id").to_pylist()
        paths = pa.array([list(codes.path(i)) for i in range(len(item_ids))], type=pa.list_(pa.int32()))
        con.register("_codes", pa.table({"item_id": item_ids, "code_path": paths}))
        con.execute(
            "create table if not exists enrichment.semantic_codes "
            "(dataset varchar not null, item_id varchar not null, code_path integer[] not null)"
        )
        try:
            _replace_partition(
                con, "enrichment.semantic_codes", dataset,
                "insert into enrichment.semantic_codes select $dataset, item_id, code_path from _codes", {},
            )
        finally:
            con.unregister("_codes")
    usage = codes.usage_per_level()
    lines = ["| level | parent nodes | codes used | mean children per parent |", "|---|---|---|---|"]
    lines += [
        f"| {row['level']} | {row['parent_nodes']} | {row['codes_used']} | {row['mean_children_per_parent']:.1f} |"
        for row in usage
    ]
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(item_ids),
        "depth": codes.depth,
        "forced_splits": codes.forced_splits,
        "items_sharing_a_code": sum(len(items) for items in codes.shared_codes().values()),
        "usage_per_level": dg.MetadataValue.md("\n".join(lines)),
    })
