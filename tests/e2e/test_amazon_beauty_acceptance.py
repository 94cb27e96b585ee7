"""Acceptance on real data: amazon-beauty through the Dagster data layer gives the published 5-core split."""

import gzip
import json
from collections import defaultdict
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration.assets.dbt import data_layer_dbt
from orchestration.assets.ingest import ingest_raw_logs
from orchestration.checks import gx_interactions, gx_raw_events
from orchestration.paths import PROJECT_ROOT, registry_path
from orchestration.resources import pipeline_resources

pytestmark = pytest.mark.slow

RAW_EVENTS = PROJECT_ROOT / "data/raw/amazon-beauty/events.jsonl.gz"


def _raw_sequences() -> dict[str, list[str]]:
    """Each user's items from the raw log itself, sorted by (timestamp, event_id)."""
    by_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    with gzip.open(RAW_EVENTS, "rt") as handle:
        for line in handle:
            event = json.loads(line)
            by_user[event["user_id"]].append((event["timestamp"], event["event_id"], event["item_id"]))
    return {user: [item for _, _, item in sorted(events)] for user, events in by_user.items()}


def test_amazon_beauty_5core_split_matches_the_papers(warehouse_path: Path) -> None:
    result = dg.materialize(
        [ingest_raw_logs, data_layer_dbt, gx_raw_events, gx_interactions],
        partition_key="amazon-beauty",
        resources=pipeline_resources(str(warehouse_path), registry_path()),
    )
    assert result.success
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        stats = con.execute(
            "select users, items, interactions, users_excluded_short, events_quarantined "
            "from marts.dataset_stats where dataset = 'amazon-beauty'"
        ).fetchone()
        sequences = dict(con.execute(
            "select user_id, item_ids from marts.user_sequences where dataset = 'amazon-beauty'"
        ).fetchall())
        targets = con.execute(
            "select user_id, train_item_ids, valid_item_id, test_item_id from marts.user_sequences "
            "where dataset = 'amazon-beauty'"
        ).fetchall()
    assert stats == (22_363, 12_101, 198_502, 0, 0)
    assert sequences == _raw_sequences()
    for user, train, valid, test in targets:
        assert train + [valid, test] == sequences[user]
