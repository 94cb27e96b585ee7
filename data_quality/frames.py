"""The warehouse queries that feed the GX suites (plain DuckDB; no Dagster import)."""

from __future__ import annotations

import duckdb
import pandas as pd


def raw_events_frame(con: duckdb.DuckDBPyConnection, dataset: str) -> pd.DataFrame:
    """A dataset's ingested events: the columns the raw-events suite checks."""
    return con.execute(
        "select user_id, item_id, timestamp_s from raw.events where dataset = $dataset",
        {"dataset": dataset},
    ).df()


def quarantined_event_lines(con: duckdb.DuckDBPyConnection, dataset: str) -> int:
    """How many of a dataset's event lines went to quarantine."""
    row = con.execute(
        "select count(*) from raw.quarantine where dataset = $dataset and source_kind = 'events'",
        {"dataset": dataset},
    ).fetchone()
    return int(row[0]) if row else 0


def interactions_frame(con: duckdb.DuckDBPyConnection, dataset: str, relation: str) -> pd.DataFrame:
    """A dataset's split interactions, with `in_order`: (timestamp, event order) >= the previous row's."""
    return con.execute(
        f"""
        select
            user_id, item_id, split, sequence_position, sequence_length,
            coalesce(
                -- A log without timestamps (all NULL) is ordered by event order alone.
                (coalesce(timestamp_s, 0), event_order) >= lag((coalesce(timestamp_s, 0), event_order)) over (
                    partition by user_id order by sequence_position),
                true
            ) as in_order
        from {relation}
        where dataset = $dataset
        """,
        {"dataset": dataset},
    ).df()
