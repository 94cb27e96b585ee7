"""Materialize the whole data layer for movielens-100k on a temporary DuckDB, twice."""

from pathlib import Path

import dagster as dg
import duckdb

from orchestration.assets.dbt import data_layer_dbt
from orchestration.assets.enrichment import item_text_embeddings, semantic_codes
from orchestration.assets.ingest import ingest_raw_logs
from orchestration.assets.summary import data_layer_summary
from orchestration.checks import gx_interactions, gx_raw_events
from orchestration.resources import pipeline_resources, registry_path

DATASET = "movielens-100k"
TABLES = ("raw.events", "raw.items", "marts.interactions", "marts.user_sequences", "marts.item_catalog",
          "marts.dataset_stats", "enrichment.item_text_embeddings", "enrichment.semantic_codes")


def _materialize(warehouse: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [ingest_raw_logs, data_layer_dbt, data_layer_summary, gx_raw_events, gx_interactions, item_text_embeddings,
         semantic_codes],
        partition_key=DATASET,
        resources=pipeline_resources(str(warehouse), registry_path()),
    )


def _snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {table: con.execute(f"select * exclude (dataset) from {table} order by all").fetchall()
                for table in TABLES}


def _metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key))
    return {name: value.value for name, value in event.materialization.metadata.items()}


def test_data_layer_and_enrichment_materialize_and_rerun_identically(warehouse_path: Path) -> None:
    first = _materialize(warehouse_path)
    assert first.success

    checks = first.get_asset_check_evaluations()
    assert checks and all(evaluation.passed for evaluation in checks)
    assert {evaluation.check_name for evaluation in checks} >= {"gx_raw_events", "gx_interactions"}
    assert len(checks) > 20, "dbt tests should report as asset checks"

    summary = next(event for event in first.get_asset_materialization_events()
                   if event.asset_key == dg.AssetKey("data_layer_summary"))
    metadata = summary.materialization.metadata
    assert (metadata["users"].value, metadata["items"].value, metadata["interactions"].value) == (943, 1349, 99287)
    assert metadata["kcore_passes"].value == 2

    before = _snapshot(warehouse_path)
    assert len(before["marts.interactions"]) == 99287
    embeddings = _metadata(first, "item_text_embeddings")
    assert (embeddings["dagster/row_count"], embeddings["dim"], embeddings["reused_from_cache"]) == (1349, 384, 0)
    codes = _metadata(first, "semantic_codes")
    assert codes["dagster/row_count"] == 1349 and codes["items_sharing_a_code"] == 0 and codes["depth"] >= 2

    second = _materialize(warehouse_path)
    assert second.success
    assert _snapshot(warehouse_path) == before
    rerun = _metadata(second, "item_text_embeddings")
    assert (rerun["encoded"], rerun["reused_from_cache"]) == (0, embeddings["encoded"])
