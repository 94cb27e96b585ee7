"""The data layer's one-page summary of a dataset, read from the dataset_stats mart."""

from typing import Any

import dagster as dg
import pandas as pd
from dagster_dbt import get_asset_key_for_model

from orchestration.assets.dbt import data_layer_dbt
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, DatasetRegistryResource, WarehouseResource

DATASET_STATS = get_asset_key_for_model([data_layer_dbt], "dataset_stats")

# Headline figures shown as top-level metadata (the full row is in the markdown table).
HEADLINE_COLUMNS = ("users", "items", "interactions", "density", "sessions", "kcore_passes",
                    "events_quarantined", "duplicate_events_removed", "users_excluded_short")
# How a figure the dataset cannot have (sessions of a log without timestamps) is shown.
NOT_AVAILABLE = "n/a"


def headline_value(value: Any) -> int | float | str:
    """A statistic as a plain Python metadata value; NULL / NA / NaN (a figure the dataset lacks) as "n/a"."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return NOT_AVAILABLE
    return value.item() if hasattr(value, "item") else value


def statistics_markdown(stats: pd.DataFrame) -> str:
    """The one-row stats frame as a two-column Markdown table, missing figures as "n/a"."""
    rows = [(column, headline_value(value)) for column, value in stats.iloc[0].items()]
    return pd.DataFrame(rows, columns=["statistic", "value"]).to_markdown(index=False)


@dg.asset(
    deps=[DATASET_STATS],
    group_name="data",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="duckdb",
)
def data_layer_summary(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, registry: DatasetRegistryResource
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
    metadata: dict[str, dg.RawMetadataValue] = {name: headline_value(row[name]) for name in HEADLINE_COLUMNS}
    metadata["statistics"] = dg.MetadataValue.md(statistics_markdown(stats))
    skipped = registry.load().get(context.partition_key).skipped_for_missing_fields()
    metadata["missing_fields"] = ", ".join(skipped) or "none"
    if skipped:
        metadata["skipped"] = dg.MetadataValue.md("\n".join(f"- no {field}: {what}" for field, what in skipped.items()))
    return dg.MaterializeResult(metadata=metadata)
