"""Ingest a registry dataset's raw files into the DuckDB raw layer, quarantining every unusable line.

Reading is line-exact Python (line numbers, UTF-8, size limits, and the parsing of CSV and Parquet);
JSON-lines events are parsed by DuckDB, which is several times faster on large logs. Every
field-level rule (missing ids, over-long fields, timestamps, event ids, ratings, unknown or
duplicate item ids) lives in one SQL classification per file kind (`ml/data/ingest_sql.py`), so
all formats obey the same rules. A run replaces exactly one dataset's rows in one transaction
(delete, then insert batch by batch), so reruns and backfills are idempotent and never touch
another dataset; if anything fails the transaction rolls back and the previous rows stay.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ml.data.ingest_sql import EVENT_FIELDS, classified_events_sql, classified_items_sql, json_events_sql
from ml.data.mapped_columns import IngestError, check_mapped_columns, raise_if_unseen
from ml.data.readers import QUARANTINE_TEXT_CHARS, RawRecord, iter_line_batches, iter_records
from ml.data.registry import (
    DatasetConfig,
    DatasetRegistry,
    EventColumns,
    FileFormat,
)
from ml.data.warehouse import RAW_SCHEMA, ensure_raw_schema, memory_capped, transaction

logger = logging.getLogger(__name__)

# Lines staged and classified per statement. 1M, not 200k: every batch rebuilds the catalog lookup and
# DuckDB parallelises a statement over row groups of 122,880 rows (10M-line log: 40 s against 48 s).
STAGE_BATCH_ROWS = 1_000_000
# DuckDB's share of ingestion's memory: the process also holds each batch's lines in Python and Arrow.
# On the 10M-line benchmark log, 1GB measured 34.8 s and 2.8 GB peak RSS; the pipeline's 2GB cap 42.4 s
# and 3.6 GB (so the lower cap is faster too, here).
INGEST_MEMORY_LIMIT = "1GB"

_RECORD_COLUMNS = ("line_number", "raw_text", "reason", "detail")
_EVENT_STAGE_COLUMNS = ("line_number", "ingest_order", "raw_text", "reason", "detail", *EVENT_FIELDS)
_ITEM_STAGE_COLUMNS = (*_RECORD_COLUMNS, "item_id", "title", "description", "brand", "categories", "attributes")
_ARROW_TYPES = {"line_number": pa.int64(), "ingest_order": pa.int64(), "categories": pa.list_(pa.string())}


@dataclass(frozen=True)
class IngestReport:
    """What one ingestion run loaded and quarantined for a dataset."""

    dataset: str
    events_loaded: int
    items_loaded: int
    event_lines: int
    item_lines: int
    quarantined: dict[str, dict[str, int]] = field(default_factory=dict)  # source kind -> reason -> rows

    @property
    def events_quarantined(self) -> int:
        """Number of event lines sent to quarantine."""
        return sum(self.quarantined.get("events", {}).values())

    @property
    def event_quarantine_rate(self) -> float:
        """Share of event lines that went to quarantine."""
        return self.events_quarantined / self.event_lines if self.event_lines else 0.0


# ---------------------------------------------------------------- values of Python-parsed records


def _as_text(value: Any) -> str | None:
    """A raw JSON/CSV/Parquet value as text: scalars as written, containers as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _as_categories(value: Any, separator: str | None) -> list[str] | None:
    """Categories as a flat list of non-empty strings (JSON lists may be nested; strings are split)."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.split(separator) if separator else [value]
        cleaned = [part.strip() for part in parts if part.strip()]
        return cleaned or None
    if isinstance(value, list):
        flat: list[str] = []
        for element in value:
            flat.extend(_as_categories(element, separator) or [])
        return flat or None
    return [str(value)]


def _record_row(record: RawRecord) -> dict[str, Any]:
    return {"line_number": record.line_number, "raw_text": record.raw_text[:QUARANTINE_TEXT_CHARS],
            "reason": record.reason, "detail": record.detail}


def _event_row(record: RawRecord, ingest_order: int, columns: EventColumns) -> dict[str, Any]:
    """One staged event from a Python-parsed record (CSV, Parquet): mapped values as text."""
    row = _record_row(record)
    row["ingest_order"] = ingest_order
    if record.fields is not None:
        for name, mapping_field in EVENT_FIELDS.items():
            column = getattr(columns, mapping_field)
            row[name] = _as_text(record.fields.get(column)) if column else None
    return row


def _item_row(record: RawRecord, dataset: DatasetConfig) -> dict[str, Any]:
    """One staged catalog item from a parsed record: mapped values as text, categories as a list."""
    row = _record_row(record)
    if record.fields is None:
        return row
    assert dataset.items is not None
    source = dataset.items
    columns = source.columns
    get = record.fields.get
    attributes = {name: get(name) for name in source.attribute_columns if get(name) not in (None, "")}
    row.update({
        "item_id": _as_text(get(columns.item_id)),
        "title": _as_text(get(columns.title)) if columns.title else None,
        "description": _as_text(get(columns.description)) if columns.description else None,
        "brand": _as_text(get(columns.brand)) if columns.brand else None,
        "categories": _as_categories(get(columns.categories), source.category_separator)
        if columns.categories else None,
        "attributes": json.dumps(attributes, ensure_ascii=False, sort_keys=True, default=str)
        if attributes else None,
    })
    return row


def _batches(rows: Iterable[dict[str, Any]], columns: tuple[str, ...], size: int) -> Iterator[pa.Table]:
    """Group rows into Arrow tables of at most `size` rows with exactly `columns`."""
    buffer: dict[str, list[Any]] = {name: [] for name in columns}
    count = 0
    for row in rows:
        for name in columns:
            buffer[name].append(row.get(name))
        count += 1
        if count == size:
            yield _to_arrow(buffer)
            buffer = {name: [] for name in columns}
            count = 0
    if count:
        yield _to_arrow(buffer)


def _to_arrow(buffer: dict[str, list[Any]]) -> pa.Table:
    return pa.table({name: pa.array(values, type=_ARROW_TYPES.get(name, pa.string()))
                     for name, values in buffer.items()})


# ---------------------------------------------------------------- SQL: parsing and classification


# ---------------------------------------------------------------- loading


def _stage_columns_ddl(columns: tuple[str, ...]) -> str:
    types = {"line_number": "bigint", "ingest_order": "bigint", "categories": "varchar[]"}
    return ", ".join(f"{name} {types.get(name, 'varchar')}" for name in columns)


def _counted(records: Iterator[RawRecord], counter: Counter, key: str) -> Iterator[RawRecord]:
    """Pass records through while counting them under `key`."""
    for record in records:
        counter[key] += 1
        yield record


def _load_items(
    con: duckdb.DuckDBPyConnection, dataset: DatasetConfig, path: Path, file: str, lines: Counter, batch_rows: int
) -> None:
    """Stage the whole catalog (duplicates are a whole-file property), classify, and insert it."""
    assert dataset.items is not None
    records = check_mapped_columns(path, dataset.items,
                                    iter_records(path, dataset.items, dataset.settings.max_line_bytes))
    con.execute(f"create or replace temp table _stage_items ({_stage_columns_ddl(_ITEM_STAGE_COLUMNS)})")
    rows = (_item_row(record, dataset) for record in _counted(records, lines, "items"))
    for batch in _batches(rows, _ITEM_STAGE_COLUMNS, batch_rows):
        _insert_arrow(con, "_stage_items", batch)
    con.execute(f"create or replace temp table _items_classified as {classified_items_sql(dataset)}")
    params = {"dataset": dataset.name, "file": file}
    con.execute(
        f"""
        insert into {RAW_SCHEMA}.items
        select $dataset, $file, line_number, item_id, title, description, brand, categories, attributes
        from _items_classified where final_reason is null order by line_number
        """,
        params,
    )
    _insert_quarantine(con, "_items_classified", "items", params)
    con.execute("drop table _stage_items")
    con.execute("drop table _items_classified")


def _json_line_tables(path: Path, max_line_bytes: int, batch_rows: int, lines: Counter) -> Iterator[pa.Table]:
    """Raw JSON lines as Arrow batches for DuckDB to parse; a line's ingest order is its line number."""
    for batch in iter_line_batches(path, max_line_bytes, batch_rows):
        count = len(batch.texts)
        lines["events"] += count
        numbers = pa.array(np.arange(batch.first_line, batch.first_line + count, dtype=np.int64))
        if batch.reasons:
            reasons = [None] * count
            for offset, reason in batch.reasons.items():
                reasons[offset] = reason
            reason_column = pa.array(reasons, type=pa.string())
        else:  # the common case: no line of the batch failed reading
            reason_column = pa.nulls(count, type=pa.string())
        yield pa.table({
            "line_number": numbers,
            "ingest_order": numbers,
            "raw_text": pa.array(batch.texts, type=pa.string()),
            "reason": reason_column,
            "detail": pa.nulls(count, type=pa.string()),
        })


def _parsed_event_tables(
    path: Path, dataset: DatasetConfig, batch_rows: int, lines: Counter
) -> Iterator[pa.Table]:
    """Python-parsed events (CSV, Parquet) as Arrow batches of staged text values."""
    source = dataset.events
    records = check_mapped_columns(path, source, iter_records(path, source, dataset.settings.max_line_bytes))
    rows = (
        _event_row(record, order, source.columns)
        for order, record in enumerate(_counted(records, lines, "events"), start=1)
    )
    return _batches(rows, _EVENT_STAGE_COLUMNS, batch_rows)


def _load_events(
    con: duckdb.DuckDBPyConnection, dataset: DatasetConfig, path: Path, file: str, has_catalog: bool,
    lines: Counter, batch_rows: int,
) -> None:
    """Stream the event log in batches: stage, classify, insert usable rows and quarantine the rest.

    JSON lines are parsed by DuckDB, so their mapped columns are checked from the classified rows'
    counts; other formats through `check_mapped_columns` as they are read.
    """
    json_lines = dataset.events.format is FileFormat.JSONL
    if json_lines:
        tables = _json_line_tables(path, dataset.settings.max_line_bytes, batch_rows, lines)
    else:
        tables = _parsed_event_tables(path, dataset, batch_rows, lines)
    staged = f"({json_events_sql(dataset.events.columns)})" if json_lines else "_event_batch"
    classify_sql = classified_events_sql(dataset, has_catalog, staged)
    params = {"dataset": dataset.name, "file": file}
    # JSON lines are parsed by DuckDB: count, per mapped column, the parsed lines that have it.
    mapped = {name: column for name, field_name in EVENT_FIELDS.items()
              if (column := getattr(dataset.events.columns, field_name))}
    present: Counter = Counter()
    for table in tables:
        con.register("_event_lines" if json_lines else "_event_batch", table)
        try:
            # The raw text is kept for the quarantined rows only: the temp table stays narrow.
            con.execute(
                "create or replace temp table _events_classified as select * exclude (raw_text), "
                f"case when final_reason is not null then raw_text end as raw_text from ({classify_sql})",
                {"dataset": dataset.name} if has_catalog else {},
            )
        finally:
            con.unregister("_event_lines" if json_lines else "_event_batch")
        con.execute(
            f"""
            insert into {RAW_SCHEMA}.events
            select $dataset, $file, line_number, ingest_order, event_id, user_id, item_id, event_type,
                   timestamp_s, rating, review_text
            from _events_classified where final_reason is null
            """,
            params,
        )
        _insert_quarantine(con, "_events_classified", "events", params)
        if json_lines:
            counts = con.execute(
                f"select count(*) filter (where reason is null), {', '.join(f'count({name})' for name in mapped)} "
                "from _events_classified").fetchone()
            present.update(dict(zip(["parsed", *mapped], counts or (), strict=True)))
    con.execute("drop table if exists _events_classified")
    if json_lines and present["parsed"]:
        raise_if_unseen(path, [column for name, column in mapped.items() if not present[name]])


def _insert_arrow(con: duckdb.DuckDBPyConnection, table: str, batch: pa.Table) -> None:
    con.register("_ingest_batch", batch)
    try:
        con.execute(f"insert into {table} select * from _ingest_batch")
    finally:
        con.unregister("_ingest_batch")


def _insert_quarantine(con: duckdb.DuckDBPyConnection, classified: str, kind: str, params: dict) -> None:
    con.execute(
        f"""
        insert into {RAW_SCHEMA}.quarantine
        select $dataset, '{kind}', $file, line_number, left(raw_text, {QUARANTINE_TEXT_CHARS}), final_reason,
               final_detail
        from {classified} where final_reason is not null order by line_number
        """,
        params,
    )


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def ingest_dataset(
    con: duckdb.DuckDBPyConnection, registry: DatasetRegistry, name: str, batch_rows: int = STAGE_BATCH_ROWS
) -> IngestReport:
    """Load one dataset's raw events and items into the raw layer, replacing only that dataset's rows."""
    dataset = registry.get(name)
    event_path = registry.event_path(name)
    item_path = registry.item_path(name)
    for path in [event_path] + ([item_path] if item_path else []):
        if not path.is_file():
            raise IngestError(f"dataset {name!r}: raw file not found: {path}")

    ensure_raw_schema(con)
    lines: Counter = Counter()
    with memory_capped(con, INGEST_MEMORY_LIMIT), transaction(con):
        for table in ("events", "items", "quarantine"):
            con.execute(f"delete from {RAW_SCHEMA}.{table} where dataset = $dataset", {"dataset": name})
        if item_path is not None:
            # Source files are recorded relative to the registry, so the warehouse reads the same anywhere.
            _load_items(con, dataset, item_path, _relative(item_path, registry.base_dir), lines, batch_rows)
        _load_events(con, dataset, event_path, _relative(event_path, registry.base_dir),
                     item_path is not None, lines, batch_rows)
    return _report(con, name, lines)


def _report(con: duckdb.DuckDBPyConnection, name: str, lines: Counter) -> IngestReport:
    """Counts of what the warehouse now holds for the dataset."""
    params = {"dataset": name}
    quarantined: dict[str, dict[str, int]] = {}
    for kind, reason, rows in con.execute(
        f"select source_kind, reason, count(*) from {RAW_SCHEMA}.quarantine where dataset = $dataset "
        "group by all order by all",
        params,
    ).fetchall():
        quarantined.setdefault(kind, {})[reason] = int(rows)
    counts = {}
    for table in ("events", "items"):
        row = con.execute(f"select count(*) from {RAW_SCHEMA}.{table} where dataset = $dataset", params).fetchone()
        counts[table] = int(row[0]) if row else 0
    report = IngestReport(
        dataset=name,
        events_loaded=counts["events"],
        items_loaded=counts["items"],
        event_lines=lines["events"],
        item_lines=lines["items"],
        quarantined=quarantined,
    )
    logger.info(
        "ingested %s: %d events, %d items loaded; quarantined %s",
        name, report.events_loaded, report.items_loaded, quarantined or "nothing",
    )
    return report
