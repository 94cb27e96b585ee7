"""Great Expectations suites as blocking Dagster asset checks on the ingested and split data."""


import dagster as dg
from dagster_dbt import get_asset_key_for_model

from data_quality.frames import interactions_frame, quarantined_event_lines, raw_events_frame
from data_quality.suites import (
    RawEventThresholds,
    SuiteOutcome,
    validate_ingested_events,
    validate_interactions,
)
from orchestration.assets.dbt import data_layer_dbt
from orchestration.assets.ingest import RAW_EVENTS
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, DatasetRegistryResource, WarehouseResource

INTERACTIONS = get_asset_key_for_model([data_layer_dbt], "interactions")
MIN_SEQUENCE_LENGTH = 3  # matches the dbt var min_sequence_length: train + validation + test


def _check_result(outcome: SuiteOutcome) -> dg.AssetCheckResult:
    """A GX outcome as a check result: failures named, every expectation in the metadata."""
    return dg.AssetCheckResult(
        passed=outcome.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if outcome.success else "failed: " + ", ".join(
            f"{failure.expectation}({failure.column or ''})" for failure in outcome.failures
        ),
        metadata={"expectations": dg.MetadataValue.md(outcome.as_markdown())},
    )


@dg.asset_check(
    asset=RAW_EVENTS,
    name="gx_raw_events",
    blocking=True,
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    description="GX: row count, key null rates, timestamp range, quarantine rate under the dataset's limit.",
)
def gx_raw_events(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, registry: DatasetRegistryResource
) -> dg.AssetCheckResult:
    """Validate the partition's ingested events with the raw-events GX suite."""
    dataset = context.partition_key
    config = registry.load().get(dataset)
    settings = config.settings
    with warehouse.connect(read_only=True) as con:
        events = raw_events_frame(con, dataset)
        quarantined = quarantined_event_lines(con, dataset)
    thresholds = RawEventThresholds(
        min_timestamp_s=settings.min_timestamp_s,
        max_timestamp_s=settings.max_timestamp_s,
        max_quarantine_rate=settings.max_quarantine_rate,
        has_timestamps=config.has_timestamps,
    )
    return _check_result(validate_ingested_events(events, quarantined, thresholds))


@dg.asset_check(
    asset=INTERACTIONS,
    name="gx_interactions",
    blocking=True,
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    description="GX: keys present, valid splits, one valid and one test per user, sequences sorted.",
)
def gx_interactions(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """Validate the partition's split interactions with the interactions GX suite."""
    with warehouse.connect(read_only=True) as con:
        frame = interactions_frame(con, context.partition_key, "marts.interactions")
    return _check_result(validate_interactions(frame, MIN_SEQUENCE_LENGTH))
