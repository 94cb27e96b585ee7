"""Ingestion: raw logs of one dataset into the DuckDB raw layer (a thin wrapper over ml.data.ingest)."""


import dagster as dg

from ml.data.ingest import IngestReport, ingest_dataset
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, DatasetRegistryResource, WarehouseResource

RAW_EVENTS = dg.AssetKey(["raw", "events"])
RAW_ITEMS = dg.AssetKey(["raw", "items"])
RAW_QUARANTINE = dg.AssetKey(["raw", "quarantine"])

QUARANTINE_SAMPLE_ROWS = 10


def _quarantine_markdown(report: IngestReport) -> str:
    """Quarantined rows per (file kind, reason) as a markdown table."""
    lines = ["| source | reason | rows |", "|---|---|---|"]
    for kind, reasons in sorted(report.quarantined.items()):
        lines += [f"| {kind} | {reason} | {rows} |" for reason, rows in sorted(reasons.items())]
    return "\n".join(lines) if len(lines) > 2 else "nothing quarantined"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(RAW_EVENTS, description="One row per usable raw event line, typed, per dataset."),
        dg.AssetSpec(RAW_ITEMS, description="One row per usable raw catalog line, per dataset."),
        dg.AssetSpec(RAW_QUARANTINE, description="One row per unusable raw line, with the reason."),
    ],
    name="ingest_raw_logs",
    group_name="data",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="duckdb",
)
def ingest_raw_logs(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, registry: DatasetRegistryResource
):
    """Load the partition's raw events and items, replacing only that dataset's rows."""
    datasets = registry.load()
    dataset = context.partition_key
    with warehouse.connect() as con:
        report = ingest_dataset(con, datasets, dataset)
        sample = con.execute(
            "select source_kind, line_number, reason, detail, left(raw_text, 120) as raw_text "
            "from raw.quarantine where dataset = $dataset order by source_kind, line_number limit $n",
            {"dataset": dataset, "n": QUARANTINE_SAMPLE_ROWS},
        ).df()
    files = [str(path) for path in datasets.raw_files(dataset)]
    yield dg.MaterializeResult(
        asset_key=RAW_EVENTS,
        metadata={
            "dagster/row_count": report.events_loaded,
            "event_lines": report.event_lines,
            "events_quarantined": report.events_quarantined,
            "quarantine_rate": report.event_quarantine_rate,
            "source_files": files,
            "registry_fingerprint": datasets.get(dataset).fingerprint(),
        },
    )
    yield dg.MaterializeResult(
        asset_key=RAW_ITEMS,
        metadata={
            "dagster/row_count": report.items_loaded,
            "item_lines": report.item_lines,
            "items_quarantined": sum(report.quarantined.get("items", {}).values()),
        },
    )
    yield dg.MaterializeResult(
        asset_key=RAW_QUARANTINE,
        metadata={
            "dagster/row_count": sum(sum(reasons.values()) for reasons in report.quarantined.values()),
            "by_reason": dg.MetadataValue.md(_quarantine_markdown(report)),
            "sample": dg.MetadataValue.md(sample.to_markdown(index=False) if len(sample) else "none"),
        },
    )
