"""Datasets of any shape share one warehouse: `make run` and `make backfill` as a user types them.

A log without timestamps, ratings or item text (user and item ids only) and a timestamped one are
built whole-graph in one warehouse, each order, then each again, at the tiny budgets of
`tiny_run_config.yaml`: every asset succeeds, each publishes an index, and neither build changes
the other dataset's rows. Then `make backfill` runs the whole graph over the two shipped datasets
and a timestamp-less one. Real make, dbt, Dagster (a temporary instance), MLflow and faiss.
"""

from pathlib import Path

import duckdb
import pytest

from ml.index.store import list_versions
from tests.orchestration.make_runs import make_environment, run_make
from tests.tiny_datasets import (
    shipped_entries,
    write_registry,
    write_timestamped_slice,
    write_timestampless_slice,
)

UNTIMED, TIMED = "tiny-untimed", "tiny-timed"
# Every table that holds rows of several datasets (a view holds none of its own).
PARTITIONED_TABLES = (
    "raw.events", "raw.items", "raw.quarantine", "staging.stg_events", "intermediate.int_sessions",
    "intermediate.int_kcore_interactions", "marts.interactions", "marts.user_sequences", "marts.item_catalog",
    "marts.dataset_stats", "enrichment.item_profiles", "enrichment.user_profiles", "enrichment.semantic_codes",
    "enrichment.behaviour_codes", "evaluation.model_metrics",
)

pytestmark = pytest.mark.slow


def _rows(warehouse: Path, dataset: str) -> dict[str, list[tuple]]:
    """One dataset's rows of every partitioned table, sorted; a table no build has made yet has none."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        existing = {f"{schema}.{table}" for schema, table in con.execute(
            "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE'"
        ).fetchall()}
        return {table: con.execute(f"select * from {table} where dataset = $dataset order by all",
                                   {"dataset": dataset}).fetchall() if table in existing else []
                for table in PARTITIONED_TABLES}


def test_untimed_and_timed_datasets_build_in_either_order_in_one_warehouse(
    warehouse_path: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    registry = write_registry(tmp_path / "datasets.yaml", {
        UNTIMED: write_timestampless_slice(raw, UNTIMED), TIMED: write_timestamped_slice(raw, TIMED)})
    env = make_environment(tmp_path, registry, warehouse_path)

    out = run_make(env, "run", f"DATASET={UNTIMED}")
    assert "  sessions: n/a" in out and f"published index: {tmp_path / 'data' / 'indexes' / UNTIMED}" in out
    untimed = _rows(warehouse_path, UNTIMED)
    # File order, no timestamps, no sessions, no catalog: every item's text is its id, no profile invented.
    assert untimed["marts.interactions"] and untimed["raw.items"] == []
    assert untimed["enrichment.item_profiles"] == [] and untimed["enrichment.user_profiles"] == []
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert con.execute("select count(timestamp_s), count(session_id) from marts.interactions "
                           "where dataset = $dataset", {"dataset": UNTIMED}).fetchone() == (0, 0)

    out = run_make(env, "run", f"DATASET={TIMED}")
    assert "  sessions: n/a" not in out and f"published index: {tmp_path / 'data' / 'indexes' / TIMED}" in out
    timed = _rows(warehouse_path, TIMED)
    assert timed["raw.items"] and timed["enrichment.item_profiles"]
    assert _rows(warehouse_path, UNTIMED) == untimed

    run_make(env, "run", f"DATASET={UNTIMED}")
    assert _rows(warehouse_path, TIMED) == timed
    assert _rows(warehouse_path, UNTIMED) == untimed  # nothing budgeted is left to add: the rebuild is identical

    run_make(env, "run", f"DATASET={TIMED}")  # spends more profile budget, so its own rows may grow
    assert _rows(warehouse_path, UNTIMED) == untimed
    for dataset in (UNTIMED, TIMED):
        assert len(list_versions(tmp_path / "data" / "indexes", dataset)) == 2, dataset


def test_make_backfill_builds_the_shipped_datasets_and_an_untimed_one(warehouse_path: Path, tmp_path: Path) -> None:
    registry = write_registry(tmp_path / "datasets.yaml", {
        **shipped_entries(), UNTIMED: write_timestampless_slice(tmp_path / "raw", UNTIMED)}, default="amazon-beauty")
    out = run_make(make_environment(tmp_path, registry, warehouse_path), "backfill")
    for dataset in ("amazon-beauty", "movielens-100k", UNTIMED):
        assert f"published index: {tmp_path / 'data' / 'indexes' / dataset}" in out, dataset
    assert out.count("  sessions: n/a") == 1
