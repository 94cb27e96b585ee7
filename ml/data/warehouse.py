"""The DuckDB warehouse: the raw layer's tables (written by ingestion, read by dbt) and a transaction helper."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa

RAW_SCHEMA = "raw"

# One row per usable raw event line (typed), per dataset.
RAW_EVENTS_DDL = f"""
create table if not exists {RAW_SCHEMA}.events (
    dataset varchar not null,
    source_file varchar not null,
    line_number bigint not null,
    ingest_order bigint not null,
    event_id bigint,
    user_id varchar not null,
    item_id varchar not null,
    event_type varchar,
    timestamp_s double not null,
    rating double,
    review_text varchar
)
"""

# One row per usable raw catalog line, per dataset.
RAW_ITEMS_DDL = f"""
create table if not exists {RAW_SCHEMA}.items (
    dataset varchar not null,
    source_file varchar not null,
    line_number bigint not null,
    item_id varchar not null,
    title varchar,
    description varchar,
    brand varchar,
    categories varchar[],
    attributes varchar
)
"""

# One row per raw line that could not be used, with the reason; nothing is dropped silently.
RAW_QUARANTINE_DDL = f"""
create table if not exists {RAW_SCHEMA}.quarantine (
    dataset varchar not null,
    source_kind varchar not null,
    source_file varchar not null,
    line_number bigint not null,
    raw_text varchar not null,
    reason varchar not null,
    detail varchar
)
"""


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw schema and its tables if they do not exist yet."""
    con.execute(f"create schema if not exists {RAW_SCHEMA}")
    for ddl in (RAW_EVENTS_DDL, RAW_ITEMS_DDL, RAW_QUARANTINE_DDL):
        con.execute(ddl)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Run the block in one transaction: commit when it finishes, roll back (and re-raise) when it fails."""
    con.execute("begin transaction")
    try:
        yield con
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


def replace_dataset_rows(
    con: duckdb.DuckDBPyConnection, table: str, dataset: str, rows: pa.Table, columns_ddl: str
) -> None:
    """Create `table` (dataset + `columns_ddl`) if needed and swap the dataset's rows for `rows`, atomically.

    `rows` holds every column but `dataset`, in the DDL's order. Delete-then-insert per dataset in
    one transaction is what makes a rerun or a backfill of one partition idempotent.
    """
    schema = table.split(".")[0]
    con.execute(f"create schema if not exists {schema}")
    con.execute(f"create table if not exists {table} (dataset varchar not null, {columns_ddl})")
    con.register("_replacement_rows", rows)
    try:
        with transaction(con):
            con.execute(f"delete from {table} where dataset = $dataset", {"dataset": dataset})
            con.execute(f"insert into {table} select $dataset, * from _replacement_rows", {"dataset": dataset})
    finally:
        con.unregister("_replacement_rows")
