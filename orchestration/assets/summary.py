"""The data layer's one-page summary of a dataset, read from the dataset_stats mart."""


import dagster as dg
from dagster_dbt import get_asset_key_for_model

from orchestration.assets.dbt import data_layer_dbt
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, WarehouseResource

DATASET_STATS = get_asset_key_for_model([data_layer_dbt], "dataset_stats")

# Headline figures shown as top-level metadata (the full row is in the markdown table).
HEADLINE_COLUMNS = ("users", "items", "interactions", "density", "sessions", "kcore_passes",
                    "events_quarantined", "duplicate_events_removed", "users_excluded_short")


@dg.asset(
    deps=[DATASET_STATS],
    group_name="data",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="duckdb",
)
def data_layer_summary(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Headline statistics of the partition's dataset after k-core and split, as metadata."""
    with warehouse.connect(read_only=True) as con:
        stats = con.execute(
            "select * from marts.dataset_stats where dataset = $dataset", {"dataset": context.partition_key}
        ).df()
    if len(stats) != 1:
        raise dg.Failure(
            f"marts.dataset_stats has {len(stats)} rows for {context.partition_key!r}, expected 1"
        )
    row = stats.iloc[0]
    context.log.info(
        "%s: %d users, %d items, %d interactions",
        context.partition_key, row["users"], row["items"], row["interactions"],
    )
    table = stats.T.reset_index()
    table.columns = ["statistic", "value"]
    metadata: dict[str, dg.RawMetadataValue] = {name: row[name].item() for name in HEADLINE_COLUMNS}
    metadata["statistics"] = dg.MetadataValue.md(table.to_markdown(index=False))
    return dg.MaterializeResult(metadata=metadata)
