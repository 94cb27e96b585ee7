"""The reference implementation: the data layer's transformations written directly as one DuckDB script."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb

from benchmarks.data_layer_generator import K_CORE, SESSION_GAP_MINUTES, sql_path

MIN_SEQUENCE_LENGTH = 3

# The runner's logger: the benchmark's whole log reads under one name.
logger = logging.getLogger("data_layer_benchmark")


@dataclass(frozen=True)
class Counts:
    """Users, items and interactions of a leave-one-out split, plus the k-core passes that led to it."""

    users: int
    items: int
    interactions: int
    kcore_passes: int


def load_and_sessionize(con: duckdb.DuckDBPyConnection, events_file: Path, gap_seconds: int) -> None:
    """Read the log, drop exact duplicates and number each user's sessions into table `kcore`."""
    con.execute(
        f"""
        create or replace table kcore as
        with events as (
            select distinct event_id, user_id, item_id, event_type, cast("timestamp" as double) as timestamp_s
            from read_json({sql_path(events_file)}, format = 'newline_delimited',
                           columns = {{event_id: 'bigint', user_id: 'varchar', item_id: 'varchar',
                                      event_type: 'varchar', "timestamp": 'bigint'}})
        ),
        flagged as (
            select *,
                   case when timestamp_s - lag(timestamp_s) over w > {gap_seconds} then 1
                        when lag(timestamp_s) over w is null then 1
                        else 0 end as is_session_start
            from events
            window w as (partition by user_id order by timestamp_s, event_id)
        )
        select event_id, user_id, item_id, event_type, timestamp_s,
               user_id || '#' || sum(is_session_start) over (
                   partition by user_id order by timestamp_s, event_id
                   rows between unbounded preceding and current row) as session_id
        from flagged
        """
    )


def iterate_kcore(con: duckdb.DuckDBPyConnection, k: int) -> int:
    """Run k-core passes until one removes nothing; return the passes, that last one included."""
    passes = 0
    while True:
        passes += 1
        removed = delete_pass(con, k)
        logger.info("direct k-core pass %d removed %d rows", passes, removed)
        if removed == 0:
            return passes


def delete_pass(con: duckdb.DuckDBPyConnection, k: int) -> int:
    """One simultaneous k-core pass: delete every row of a user or item below k; return rows deleted."""
    row = con.execute(
        f"""
        delete from kcore
        where user_id in (select user_id from kcore group by user_id having count(*) < {k})
           or item_id in (select item_id from kcore group by item_id having count(*) < {k})
        """
    ).fetchone()
    return int(row[0]) if row else 0


def write_split(con: duckdb.DuckDBPyConnection, min_length: int) -> None:
    """Leave-one-out split of the k-core into table `interactions` (short users left out)."""
    con.execute(
        f"""
        create or replace table interactions as
        with ordered as (
            select *,
                   row_number() over (partition by user_id order by timestamp_s, event_id)
                       as sequence_position,
                   count(*) over (partition by user_id) as sequence_length
            from kcore
        )
        select user_id, item_id, sequence_position, sequence_length,
               case when sequence_position = sequence_length then 'test'
                    when sequence_position = sequence_length - 1 then 'valid'
                    else 'train' end as split,
               timestamp_s, event_id, event_type, session_id
        from ordered
        where sequence_length >= {min_length}
        """
    )


def run_direct(events_file: Path, database: Path) -> int:
    """Dedupe, sessionize, k-core and split in one DuckDB connection; return the k-core passes."""
    con = duckdb.connect(str(database))
    try:
        load_and_sessionize(con, events_file, SESSION_GAP_MINUTES * 60)
        passes = iterate_kcore(con, K_CORE)
        write_split(con, MIN_SEQUENCE_LENGTH)
    finally:
        con.close()
    return passes


def direct_counts(database: Path, passes: int) -> Counts:
    """Users, items and interactions of the direct run's split table."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        row = con.execute(
            "select count(distinct user_id), count(distinct item_id), count(*) from interactions"
        ).fetchone()
    finally:
        con.close()
    if row is None:
        raise SystemExit("the direct run's interactions table returned no counts")
    return Counts(int(row[0]), int(row[1]), int(row[2]), passes)
