"""A failing GX check on ingested events blocks the dbt layer downstream in the same run."""

from pathlib import Path

import dagster as dg
import duckdb

from orchestration.assets.dbt import data_layer_dbt
from orchestration.assets.ingest import ingest_raw_logs
from orchestration.checks import gx_raw_events
from orchestration.resources import pipeline_resources

# A registry whose movielens-100k entry points at a log where half the lines are unusable.
REGISTRY = """
datasets:
  movielens-100k:
    events:
      path: ratings.csv
      format: csv
      columns: {user_id: user_id, item_id: item_id, timestamp: timestamp}
    settings: {max_quarantine_rate: 0.05}
"""


def test_quarantine_rate_over_the_limit_blocks_the_dbt_build(tmp_path: Path) -> None:
    (tmp_path / "datasets.yaml").write_text(REGISTRY)
    rows = [f"u{i % 7},i{i % 11},{1_500_000_000 + i}" for i in range(100)]
    rows[::2] = ["not,a,timestamp"] * 50
    (tmp_path / "ratings.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    warehouse = tmp_path / "warehouse.duckdb"

    result = dg.materialize(
        [ingest_raw_logs, gx_raw_events, data_layer_dbt],
        partition_key="movielens-100k",
        resources=pipeline_resources(str(warehouse), tmp_path / "datasets.yaml"),
        raise_on_error=False,
    )

    assert not result.success
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "gx_raw_events"]
    assert not evaluation.passed
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert dg.AssetKey(["raw", "events"]) in materialized
    assert dg.AssetKey(["marts", "interactions"]) not in materialized
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from raw.quarantine").fetchone() == (50,)
        schemas = {row[0] for row in con.execute("select schema_name from information_schema.schemata").fetchall()}
    assert "marts" not in schemas, "dbt must not have run"
