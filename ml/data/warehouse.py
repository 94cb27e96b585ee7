"""The DuckDB warehouse: the raw layer's tables (written by ingestion, read by dbt), opening it, transactions."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

logger = logging.getLogger(__name__)

# Opens the warehouse for one short piece of work and closes it (e.g. `WarehouseResource.connect`):
# long computations take one of these instead of a connection, so no lock is held while they run.
Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


# DuckDB's buffer pool defaults to 80% of the machine's memory and a 10M-event build fills it (8 GB
# measured); a cap makes DuckDB spill sorts and joins to disk instead. dbt reads the same variable
# (transforms/profiles.yml), so ingestion, dbt and the assets share one cap.
MEMORY_LIMIT_ENV = "LLMREC_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "2GB"


def memory_limit() -> str:
    """DuckDB's memory_limit for every warehouse connection: LLMREC_DUCKDB_MEMORY_LIMIT, else 2GB."""
    value = os.environ.get(MEMORY_LIMIT_ENV, DEFAULT_MEMORY_LIMIT)
    try:
        return _checked_size(value)
    except ValueError as error:
        raise ValueError(f"{MEMORY_LIMIT_ENV}: {error}") from None


@contextmanager
def memory_capped(con: duckdb.DuckDBPyConnection, limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """Run the block with the connection's memory_limit lowered to `limit` (never raised), restored after."""
    row = con.execute("select current_setting('memory_limit')").fetchone()
    previous = str(row[0]) if row else None
    lowered = previous is None or size_bytes(limit) < size_bytes(previous)
    if lowered:
        con.execute(f"set memory_limit = '{_checked_size(limit)}'")
    try:
        yield con
    finally:
        if lowered and previous is not None:
            con.execute(f"set memory_limit = '{previous}'")


_UNIT_BYTES = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def size_bytes(size: str) -> float:
    """Bytes of a DuckDB size such as 2GB or 1.8 GiB (DuckDB's GB are 1000^3, GiB 1024^3)."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$", size)
    if not match or match.group(2).lower() not in _UNIT_BYTES:
        raise ValueError(f"{size!r} is not a size such as 2GB or 1500MB")
    return float(match.group(1)) * _UNIT_BYTES[match.group(2).lower()]


def _checked_size(value: str) -> str:
    """`value` stripped, once `size_bytes` has read it (so nothing but a size reaches a SET statement)."""
    size_bytes(value)
    return value.strip()


class WarehouseLocked(RuntimeError):
    """Another process held the warehouse's lock for longer than we were willing to wait."""


def _is_lock_error(error: duckdb.Error) -> bool:
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


@contextmanager
def open_warehouse(
    path: str | Path, read_only: bool = False, wait_s: float = 30.0,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the DuckDB file at `path`, closed afterwards; waits up to `wait_s` for another process's lock.

    The connection's memory is capped by `memory_limit()`.

    DuckDB lets one process write, or several read, a file. A step of the pipeline holds the file only
    briefly (read inputs, close, compute, reopen to write), so a short wait with backoff gets through;
    past `wait_s` the error says who to wait for instead of DuckDB's raw IOException.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config={"memory_limit": memory_limit()})
            break
        except duckdb.Error as error:
            if not _is_lock_error(error):
                raise
            if time.monotonic() >= deadline:
                raise WarehouseLocked(
                    f"the warehouse {path} is locked by another process (a pipeline step is writing to it, or a "
                    f"notebook/CLI holds it open) and stayed locked for {wait_s:.0f} s; retry when it is done. "
                    f"DuckDB said: {error}") from error
            logger.info("warehouse %s is locked by another process; retrying in %.1f s", path, delay)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0)
    try:
        yield con
    finally:
        con.close()

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
    timestamp_s double,  -- NULL only for a log without timestamps (the registry maps none)
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
    # Warehouses created before timestamps became optional declared the column not null.
    con.execute(f"alter table {RAW_SCHEMA}.events alter column timestamp_s drop not null")


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
