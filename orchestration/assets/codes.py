"""EAGER code assets: hierarchical k-means codes over semantic (text) and behaviour item embeddings."""

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
from pydantic import Field

from ml.codes.hierarchical_kmeans import HierarchicalKMeansConfig, hierarchical_codes
from ml.data.embedding_store import read_embeddings
from ml.data.warehouse import replace_dataset_rows
from orchestration.assets.behaviour import ITEM_BEHAVIOUR, behaviour_embeddings
from orchestration.assets.embeddings import ITEM_TEXT, item_text_embeddings
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, ArtifactStoreResource, WarehouseResource


class CodesConfig(dg.Config):
    """Hierarchical k-means settings: the EAGER authors' released shape (k = 128, balanced; see `ml/codes`)."""

    branching: int = Field(default=128, description="Children per node (the paper says 256; the authors' code 128).")
    balanced: bool = Field(default=True, description="Cap every child at ceil(n / k) items: two levels while k^2 "
                           "slots hold the catalogue, else the fewest that do.")
    seed: int = 0


def _build_codes(
    con: duckdb.DuckDBPyConnection, root: Path, dataset: str, embeddings: str, table: str, config: CodesConfig
) -> dict[str, object]:
    """Cluster one stored embedding set into unique code paths, store them in `table`, return the metadata."""
    stored = read_embeddings(root, dataset, embeddings)
    # k-means on unit vectors clusters by cosine, the similarity every embedding here is trained or pooled for.
    vectors = stored.vectors / np.maximum(np.linalg.norm(stored.vectors, axis=1, keepdims=True), 1e-12)
    codes = hierarchical_codes(
        vectors, HierarchicalKMeansConfig(branching=config.branching, balanced=config.balanced, seed=config.seed)
    )
    paths = pa.array([list(codes.path(index)) for index in range(len(stored.ids))], type=pa.list_(pa.int32()))
    replace_dataset_rows(con, table, dataset, pa.table({"item_id": stored.ids, "code_path": paths}),
                         "item_id varchar not null, code_path integer[] not null")
    lines = ["| level | parent nodes | codes used | mean children per parent |", "|---|---|---|---|"]
    lines += [
        f"| {row['level']} | {row['parent_nodes']} | {row['codes_used']} | {row['mean_children_per_parent']:.1f} |"
        for row in codes.usage_per_level()
    ]
    return {
        "dagster/row_count": len(stored.ids),
        "embeddings_version": stored.manifest["version"],
        "depth": codes.depth,
        "forced_splits": codes.forced_splits,
        "items_sharing_a_code": sum(len(items) for items in codes.shared_codes().values()),
        "usage_per_level": dg.MetadataValue.md("\n".join(lines)),
    }


@dg.asset(
    deps=[item_text_embeddings],
    group_name="enrichment",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="faiss",
)
def semantic_codes(
    context: dg.AssetExecutionContext, config: CodesConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """EAGER semantic codes: hierarchical k-means over the item text embeddings, one unique path per item."""
    with warehouse.connect() as con:
        metadata = _build_codes(con, artifacts.embeddings_root(), context.partition_key, ITEM_TEXT,
                                "enrichment.semantic_codes", config)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    deps=[behaviour_embeddings],
    group_name="enrichment",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="faiss",
)
def behaviour_codes(
    context: dg.AssetExecutionContext, config: CodesConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """EAGER behaviour codes: hierarchical k-means over item embeddings learned from training interactions."""
    with warehouse.connect() as con:
        metadata = _build_codes(con, artifacts.embeddings_root(), context.partition_key, ITEM_BEHAVIOUR,
                                "enrichment.behaviour_codes", config)
    return dg.MaterializeResult(metadata=metadata)
