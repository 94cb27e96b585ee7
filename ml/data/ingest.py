"""Ingest a registry dataset's raw files into the DuckDB raw layer, quarantining every unusable line.

Per-line problems (encoding, size, syntax, missing ids, over-long fields) are found while reading;
typed problems (timestamps, event ids, ratings) and cross-row ones (unknown or duplicate item ids)
are found in SQL over a staging table. A rerun replaces exactly one dataset's rows in one
transaction (delete, then insert), so reruns and backfills are idempotent and never touch another
dataset.
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
import pyarrow as pa

from ml.data.readers import QUARANTINE_TEXT_CHARS, RawRecord, iter_records
from ml.data.registry import DatasetConfig, DatasetRegistry, TimestampUnit
from ml.data.warehouse import RAW_SCHEMA, ensure_raw_schema

logger = logging.getLogger(__name__)

STAGE_BATCH_ROWS = 200_000


class IngestError(RuntimeError):
    """A dataset cannot be ingested at all (missing file, columns absent from a CSV header)."""


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


# ---------------------------------------------------------------- value extraction


def _as_text(value: Any) -> str | None:
    """A raw JSON/CSV value as text: scalars as written, containers as JSON, empty as None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _as_id(value: Any) -> str | None:
    """A user or item identifier: surrounding whitespace removed; empty means missing."""
    text = _as_text(value)
    return text.strip() if text is not None else None


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


def _too_long(values: dict[str, str | None], limit: int) -> str | None:
    """Name of the first field longer than `limit` characters, if any."""
    for name, value in values.items():
        if value is not None and len(value) > limit:
            return name
    return None


# ---------------------------------------------------------------- staging rows


_EVENT_STAGE_COLUMNS = (
    "line_number", "ingest_order", "raw_text", "reason", "detail", "user_id", "item_id",
    "event_id_raw", "event_type", "timestamp_raw", "rating_raw", "review_text",
)
_ITEM_STAGE_COLUMNS = (
    "line_number", "raw_text", "reason", "detail", "item_id", "title", "description", "brand",
    "categories", "attributes",
)


def _event_row(record: RawRecord, ingest_order: int, dataset: DatasetConfig) -> dict[str, Any]:
    """One staging row for an event record, with a reason when it is unusable already."""
    row: dict[str, Any] = {"line_number": record.line_number, "ingest_order": ingest_order,
                           "raw_text": record.raw_text[:QUARANTINE_TEXT_CHARS],
                           "reason": record.reason, "detail": record.detail}
    if record.fields is None:
        return row
    columns = dataset.events.columns
    get = record.fields.get
    values = {
        "user_id": _as_id(get(columns.user_id)),
        "item_id": _as_id(get(columns.item_id)),
        "event_id_raw": _as_id(get(columns.event_id)) if columns.event_id else None,
        "event_type": _as_text(get(columns.event_type)) if columns.event_type else None,
        "timestamp_raw": _as_id(get(columns.timestamp)),
        "rating_raw": _as_id(get(columns.rating)) if columns.rating else None,
        "review_text": _as_text(get(columns.review_text)) if columns.review_text else None,
    }
    row.update(values)
    if values["user_id"] is None:
        row["reason"] = "missing_user_id"
    elif values["item_id"] is None:
        row["reason"] = "missing_item_id"
    elif values["timestamp_raw"] is None:
        row["reason"] = "missing_timestamp"
    elif columns.event_id and values["event_id_raw"] is None:
        row["reason"] = "missing_event_id"
    elif (name := _too_long(values, dataset.settings.max_field_chars)) is not None:
        row["reason"], row["detail"] = "field_too_long", f"field {name!r}"
    return row


def _item_row(record: RawRecord, dataset: DatasetConfig) -> dict[str, Any]:
    """One staging row for a catalog record, with a reason when it is unusable already."""
    row: dict[str, Any] = {"line_number": record.line_number,
                           "raw_text": record.raw_text[:QUARANTINE_TEXT_CHARS],
                           "reason": record.reason, "detail": record.detail}
    if record.fields is None:
        return row
    assert dataset.items is not None
    source = dataset.items
    columns = source.columns
    get = record.fields.get
    categories = (
        _as_categories(get(columns.categories), source.category_separator) if columns.categories else None
    )
    attributes = {name: get(name) for name in source.attribute_columns if get(name) not in (None, "")}
    row.update({
        "item_id": _as_id(get(columns.item_id)),
        "title": _as_text(get(columns.title)) if columns.title else None,
        "description": _as_text(get(columns.description)) if columns.description else None,
        "brand": _as_text(get(columns.brand)) if columns.brand else None,
        "categories": categories,
        "attributes": json.dumps(attributes, ensure_ascii=False, sort_keys=True, default=str)
        if attributes else None,
    })
    text_fields = {name: row[name] for name in ("item_id", "title", "description", "brand", "attributes")}
    text_fields["categories"] = "|".join(categories) if categories else None
    if row["item_id"] is None:
        row["reason"] = "missing_item_id"
    elif (name := _too_long(text_fields, dataset.settings.max_field_chars)) is not None:
        row["reason"], row["detail"] = "field_too_long", f"field {name!r}"
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


_ARROW_TYPES = {"line_number": pa.int64(), "ingest_order": pa.int64(), "categories": pa.list_(pa.string())}


def _to_arrow(buffer: dict[str, list[Any]]) -> pa.Table:
    return pa.table({name: pa.array(values, type=_ARROW_TYPES.get(name, pa.string()))
                     for name, values in buffer.items()})


def _stage(con: duckdb.DuckDBPyConnection, table: str, batches: Iterable[pa.Table]) -> None:
    """Append Arrow batches to an existing staging table."""
    for batch in batches:
        con.register("_ingest_batch", batch)
        try:
            con.execute(f"insert into {table} select * from _ingest_batch")
        finally:
            con.unregister("_ingest_batch")


def _check_csv_header(path: Path, records: Iterator[RawRecord], required: list[str]) -> Iterator[RawRecord]:
    """Pass records through, failing loudly if the first parsed one lacks a mapped column."""
    checked = False
    for record in records:
        if not checked and record.fields is not None:
            missing = [name for name in required if name not in record.fields]
            if missing:
                raise IngestError(f"{path}: columns {missing} from the registry are not in the file header")
            checked = True
        yield record


# ---------------------------------------------------------------- SQL classification


def _event_reason_sql(dataset: DatasetConfig, has_catalog: bool) -> str:
    """SQL CASE giving the reason a staged event is unusable (NULL when it is fine)."""
    settings = dataset.settings
    divisor = 1000.0 if dataset.events.timestamp_unit is TimestampUnit.MILLISECONDS else 1.0
    event_id_check = (
        "when try_cast(s.event_id_raw as bigint) is null then 'event_id_not_integer'"
        if dataset.events.columns.event_id else ""
    )
    catalog_check = (
        "when s.item_id not in (select item_id from raw.items where dataset = $dataset) "
        "then 'item_not_in_catalog'" if has_catalog else ""
    )
    return f"""
        case
            when s.reason is not null then s.reason
            when try_cast(s.timestamp_raw as double) is null then 'timestamp_not_numeric'
            when not isfinite(try_cast(s.timestamp_raw as double))
              or try_cast(s.timestamp_raw as double) / {divisor} < {settings.min_timestamp_s}
              or try_cast(s.timestamp_raw as double) / {divisor} > {settings.max_timestamp_s}
                then 'timestamp_out_of_range'
            {event_id_check}
            when s.rating_raw is not null and try_cast(s.rating_raw as double) is null
                then 'rating_not_numeric'
            {catalog_check}
        end"""


def _write_dataset(
    con: duckdb.DuckDBPyConnection, dataset: DatasetConfig, event_file: str, item_file: str | None
) -> None:
    """Replace the dataset's raw rows with the classified staging rows (call inside a transaction)."""
    params = {"dataset": dataset.name}
    for table in ("events", "items", "quarantine"):
        con.execute(f"delete from {RAW_SCHEMA}.{table} where dataset = $dataset", params)
    if item_file is not None:
        con.execute(
            """
            create or replace temp table _items_classified as
            select *, coalesce(reason, case when row_number() over (
                         partition by item_id order by line_number) > 1 then 'duplicate_item_id' end
                   ) as final_reason,
                   case when reason is null and row_number() over (
                         partition by item_id order by line_number) > 1
                        then 'first seen at line ' || min(line_number) over (partition by item_id)
                        else detail end as final_detail
            from _stage_items
            """
        )
        con.execute(
            f"""
            insert into {RAW_SCHEMA}.items
            select $dataset, $file, line_number, item_id, title, description, brand, categories, attributes
            from _items_classified where final_reason is null order by line_number
            """,
            {**params, "file": item_file},
        )
        con.execute(
            f"""
            insert into {RAW_SCHEMA}.quarantine
            select $dataset, 'items', $file, line_number, raw_text, final_reason, final_detail
            from _items_classified where final_reason is not null order by line_number
            """,
            {**params, "file": item_file},
        )
    divisor = 1000.0 if dataset.events.timestamp_unit is TimestampUnit.MILLISECONDS else 1.0
    con.execute(
        f"""
        create or replace temp table _events_classified as
        select s.*, {_event_reason_sql(dataset, item_file is not None)} as final_reason
        from _stage_events s
        """,
        params if item_file is not None else {},  # only the catalog check names the dataset
    )
    con.execute(
        f"""
        insert into {RAW_SCHEMA}.events
        select $dataset, $file, line_number, ingest_order, try_cast(event_id_raw as bigint), user_id, item_id,
               event_type, try_cast(timestamp_raw as double) / {divisor}, try_cast(rating_raw as double),
               review_text
        from _events_classified where final_reason is null order by ingest_order
        """,
        {**params, "file": event_file},
    )
    con.execute(
        f"""
        insert into {RAW_SCHEMA}.quarantine
        select $dataset, 'events', $file, line_number, raw_text, final_reason, detail
        from _events_classified where final_reason is not null order by line_number
        """,
        {**params, "file": event_file},
    )


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


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
    # Source files are recorded relative to the registry so the warehouse is portable across checkouts.
    event_file = _relative(event_path, registry.base_dir)
    item_file = _relative(item_path, registry.base_dir) if item_path else None
    max_line = dataset.settings.max_line_bytes

    ensure_raw_schema(con)
    con.execute(f"create or replace temp table _stage_events ({_stage_columns_ddl(_EVENT_STAGE_COLUMNS)})")
    con.execute(f"create or replace temp table _stage_items ({_stage_columns_ddl(_ITEM_STAGE_COLUMNS)})")
    lines = Counter()
    if dataset.items is not None and item_path is not None:
        records = iter_records(item_path, dataset.items, max_line)
        if dataset.items.format == "csv":
            required = [c for c in dataset.items.columns.model_dump().values() if c]
            records = _check_csv_header(item_path, records, required + list(dataset.items.attribute_columns))
        rows = (_item_row(record, dataset) for record in _counted(records, lines, "items"))
        _stage(con, "_stage_items", _batches(rows, _ITEM_STAGE_COLUMNS, batch_rows))
    records = iter_records(event_path, dataset.events, max_line)
    if dataset.events.format == "csv":
        required = [c for c in dataset.events.columns.model_dump().values() if c]
        records = _check_csv_header(event_path, records, required)
    event_rows = (
        _event_row(record, order, dataset)
        for order, record in enumerate(_counted(records, lines, "events"), start=1)
    )
    _stage(con, "_stage_events", _batches(event_rows, _EVENT_STAGE_COLUMNS, batch_rows))

    con.execute("begin transaction")
    try:
        _write_dataset(con, dataset, event_file, item_file)
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    finally:
        for table in ("_stage_events", "_stage_items", "_events_classified", "_items_classified"):
            con.execute(f"drop table if exists {table}")

    params = {"dataset": name}
    quarantined: dict[str, dict[str, int]] = {}
    for kind, reason, rows in con.execute(
        f"select source_kind, reason, count(*) from {RAW_SCHEMA}.quarantine where dataset = $dataset "
        "group by all order by all",
        params,
    ).fetchall():
        quarantined.setdefault(kind, {})[reason] = int(rows)
    count_sql = "select count(*) from {table} where dataset = $dataset"
    report = IngestReport(
        dataset=name,
        events_loaded=_count(con, count_sql.format(table=f"{RAW_SCHEMA}.events"), params),
        items_loaded=_count(con, count_sql.format(table=f"{RAW_SCHEMA}.items"), params),
        event_lines=lines["events"],
        item_lines=lines["items"],
        quarantined=quarantined,
    )
    logger.info(
        "ingested %s: %d events, %d items loaded; quarantined %s",
        name, report.events_loaded, report.items_loaded, quarantined or "nothing",
    )
    return report


def _counted(records: Iterator[RawRecord], counter: Counter, key: str) -> Iterator[RawRecord]:
    """Pass records through while counting them under `key`."""
    for record in records:
        counter[key] += 1
        yield record


def _stage_columns_ddl(columns: tuple[str, ...]) -> str:
    types = {"line_number": "bigint", "ingest_order": "bigint", "categories": "varchar[]"}
    return ", ".join(f"{name} {types.get(name, 'varchar')}" for name in columns)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
