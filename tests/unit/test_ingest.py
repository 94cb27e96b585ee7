"""Ingestion of deliberately broken logs: every bad line quarantined with its reason, every good one loaded."""

import csv
import gzip
import json
from pathlib import Path

import duckdb
import pytest

from ml.data.ingest import IngestError, ingest_dataset
from ml.data.registry import DatasetRegistry, parse_registry

REGISTRY = """
raw_dir: .  # the test files sit beside the registry
default_dataset: broken
datasets:
  broken:
    events:
      path: events.jsonl.gz
      format: jsonl
      columns: {user_id: user, item_id: item, timestamp: ts, event_id: id, rating: stars, review_text: review}
    items:
      path: items.jsonl
      format: jsonl
      columns: {item_id: item, title: title, categories: cats}
    settings: {max_line_bytes: 2000, max_field_chars: 300}
  clean:
    events:
      path: clean.csv
      format: csv
      columns: {user_id: user_id, item_id: item_id, timestamp: timestamp}
"""


def _event(**fields: object) -> bytes:
    base: dict[str, object] = {"user": "u1", "item": "i1", "ts": 1_500_000_000, "id": 1}
    base.update(fields)
    return json.dumps({key: value for key, value in base.items() if value is not ...}).encode()


# (raw line, expected reason or None for a good line), line numbers are positions from 1.
EVENT_LINES: list[tuple[bytes, str | None]] = [
    (_event(id=1), None),
    (b'{"user": "u1", "item": ', "unparseable"),
    (b'{"user": "u\xff\xfe", "item": "i1", "ts": 1500000000, "id": 3}', "invalid_utf8"),
    (_event(user=..., id=4), "missing_user_id"),
    (_event(item="  ", id=5), "missing_item_id"),
    (_event(ts="yesterday", id=6), "timestamp_not_numeric"),
    (_event(ts=99, id=7), "timestamp_out_of_range"),
    (_event(item="i404", id=8), "item_not_in_catalog"),
    (_event(review="x" * 301, id=9), "field_too_long"),
    (_event(review="y" * 2100, id=10), "line_too_long"),
    (b"   ", "empty_line"),
    (b"[1, 2, 3]", "unparseable"),
    (_event(ts=..., id=13), "missing_timestamp"),
    (_event(id="thirteen"), "event_id_not_integer"),
    (_event(stars="good", id=15), "rating_not_numeric"),
    (_event(user=42, item="i2", ts="1500000100.5", stars=4, id=16), None),
    (_event(id=1), None),  # an exact duplicate of line 1: loaded here, removed by dbt staging
    (_event(ts=float("nan"), id=18).replace(b"NaN", b"NaN"), "timestamp_out_of_range"),
    (_event(item="i3", review="fine, with unicode: café", id=19), None),
    (_event(stars="NaN", id=20), "rating_not_finite"),  # would pass any min_rating if loaded
    (_event(stars="-Infinity", id=21), "rating_not_finite"),
    (b"not json at all", "unparseable"),  # does not start like an object: told apart by json_valid
    (b'{"user": "u1", "item": "i1", "ts": 1500000000, "id": 23} trailing', "unparseable"),
]

ITEM_LINES: list[tuple[bytes, str | None]] = [
    (b'{"item": "i1", "title": "One", "cats": ["Brand", ["Nested", "List"]]}', None),
    (b'{"item": "i2", "title": "", "cats": "Single"}', None),
    (b'{"item": "i1", "title": "One again"}', "duplicate_item_id"),
    (b'{"title": "no id"}', "missing_item_id"),
    (b'{"item": "i3", "title": "Three"', "unparseable"),
    (b'{"item": "i3", "title": "Three"}', None),
]


BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, as Excel and Windows tools write it


def _write_inputs(folder: Path) -> DatasetRegistry:
    # Both files start with a byte-order mark: their first line is still a good one.
    with gzip.open(folder / "events.jsonl.gz", "wb") as handle:
        handle.write(BOM + b"\n".join(line for line, _ in EVENT_LINES) + b"\n")
    (folder / "items.jsonl").write_bytes(BOM + b"\n".join(line for line, _ in ITEM_LINES) + b"\n")
    with (folder / "clean.csv").open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "timestamp"])
        writer.writerows([["a", "x", 1_500_000_000], ["b", "y", 1_500_000_001]])
    return parse_registry(REGISTRY, base_dir=folder)


def _expected(lines: list[tuple[bytes, str | None]], kind: str) -> set[tuple[str, int, str]]:
    return {(kind, number, reason) for number, (_, reason) in enumerate(lines, start=1) if reason}


def _good(lines: list[tuple[bytes, str | None]]) -> list[int]:
    return [number for number, (_, reason) in enumerate(lines, start=1) if reason is None]


def _snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {table: con.execute(f"select * from raw.{table} order by all").fetchall()
            for table in ("events", "items", "quarantine")}


@pytest.fixture
def registry(tmp_path: Path) -> DatasetRegistry:
    return _write_inputs(tmp_path)


def test_every_bad_line_is_quarantined_with_its_reason(registry: DatasetRegistry, tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    report = ingest_dataset(con, registry, "broken")

    quarantined = set(con.execute("select source_kind, line_number, reason from raw.quarantine").fetchall())
    assert quarantined == _expected(EVENT_LINES, "events") | _expected(ITEM_LINES, "items")
    assert report.event_lines == len(EVENT_LINES) and report.item_lines == len(ITEM_LINES)
    assert report.events_quarantined == len(_expected(EVENT_LINES, "events"))
    # Every quarantine row keeps its raw text (invalid bytes visible as escapes) and source file.
    bad_utf8 = con.execute("select raw_text, source_file from raw.quarantine where reason = 'invalid_utf8'").fetchone()
    assert bad_utf8 is not None and "\\xff\\xfe" in bad_utf8[0] and bad_utf8[1] == "events.jsonl.gz"
    duplicate_detail = con.execute(
        "select detail from raw.quarantine where reason = 'duplicate_item_id'").fetchone()
    assert duplicate_detail == ("first seen at line 1",)
    # Invalid JSON and valid JSON that is not an object are told apart, whatever the line starts with.
    details = dict(con.execute("select line_number, detail from raw.quarantine "
                               "where source_kind = 'events' and reason = 'unparseable'").fetchall())
    assert details == {2: "invalid JSON", 12: "JSON value is not an object", 22: "invalid JSON", 23: "invalid JSON"}


def test_every_good_line_is_loaded_typed(registry: DatasetRegistry, tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    report = ingest_dataset(con, registry, "broken")

    loaded = [row[0] for row in con.execute("select line_number from raw.events order by line_number").fetchall()]
    assert loaded == _good(EVENT_LINES)
    assert report.events_loaded == len(loaded)
    typed = con.execute(
        "select user_id, item_id, timestamp_s, rating, event_id from raw.events where line_number = 16"
    ).fetchone()
    assert typed == ("42", "i2", 1_500_000_100.5, 4.0, 16)
    review = con.execute("select review_text from raw.events where line_number = 19").fetchone()
    assert review == ("fine, with unicode: café",)
    items = con.execute("select line_number, item_id, title, categories from raw.items order by line_number")
    assert items.fetchall() == [
        (1, "i1", "One", ["Brand", "Nested", "List"]),
        (2, "i2", None, ["Single"]),
        (6, "i3", "Three", None),
    ]


def test_rerun_gives_identical_tables_and_leaves_other_datasets_alone(
    registry: DatasetRegistry, tmp_path: Path
) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ingest_dataset(con, registry, "clean")
    ingest_dataset(con, registry, "broken")
    first = _snapshot(con)
    ingest_dataset(con, registry, "broken")
    assert _snapshot(con) == first
    clean = con.execute("select user_id, item_id from raw.events where dataset = 'clean' order by all").fetchall()
    assert clean == [("a", "x"), ("b", "y")]


def test_csv_lines_with_wrong_shape_or_bytes_are_quarantined(tmp_path: Path) -> None:
    (tmp_path / "clean.csv").write_bytes(
        b"user_id,item_id,timestamp\n"
        b"a,x,1500000000\n"
        b"b,y\n"
        b'c,"unterminated,1500000000\n'
        b"d,\xe9t\xe9,1500000000\n"
        b"\n"
        b'"e, quoted",z,1500000001\n'
    )
    (tmp_path / "events.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "items.jsonl").write_bytes(b"")
    registry = parse_registry(REGISTRY, base_dir=tmp_path)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ingest_dataset(con, registry, "clean")
    reasons = con.execute("select line_number, reason from raw.quarantine order by line_number").fetchall()
    assert reasons == [(3, "unparseable"), (4, "unparseable"), (5, "invalid_utf8"), (6, "empty_line")]
    users = con.execute("select user_id from raw.events order by line_number").fetchall()
    assert users == [("a",), ("e, quoted",)]


def test_a_csv_header_without_a_mapped_column_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "clean.csv").write_text("user,item_id,timestamp\na,x,1500000000\n")
    registry = parse_registry(REGISTRY, base_dir=tmp_path)
    with pytest.raises(IngestError, match="user_id"):
        ingest_dataset(duckdb.connect(str(tmp_path / "w.duckdb")), registry, "clean")


def test_a_missing_raw_file_is_an_error(tmp_path: Path) -> None:
    registry = parse_registry(REGISTRY, base_dir=tmp_path)
    with pytest.raises(IngestError, match="not found"):
        ingest_dataset(duckdb.connect(str(tmp_path / "w.duckdb")), registry, "clean")


def test_parquet_events_go_through_the_same_rules(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({
        "user_id": ["a", None, "c", "d"],
        "item_id": ["x", "y", "z", "w"],
        "timestamp": [1_500_000_000, 1_500_000_001, 12, 1_500_000_003],
    }), tmp_path / "events.parquet")
    registry = parse_registry(REGISTRY.replace("path: clean.csv\n      format: csv", "path: events.parquet\n      format: parquet"),
                              base_dir=tmp_path)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    report = ingest_dataset(con, registry, "clean")
    assert con.execute("select line_number, reason from raw.quarantine order by all").fetchall() == [
        (2, "missing_user_id"), (3, "timestamp_out_of_range")]
    assert con.execute("select user_id, timestamp_s from raw.events order by all").fetchall() == [
        ("a", 1_500_000_000.0), ("d", 1_500_000_003.0)]
    assert report.event_lines == 4


def test_a_log_without_timestamps_is_ordered_by_event_id_or_line(tmp_path: Path) -> None:
    """Many public logs have no time: the registry maps none, events load with a NULL timestamp."""
    (tmp_path / "clean.csv").write_text("user_id,item_id,event_id\na,x,2\na,y,1\nb,x,\n")
    registry = parse_registry(REGISTRY.replace("item_id: item_id, timestamp: timestamp}", "item_id: item_id}"),
                              base_dir=tmp_path)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    report = ingest_dataset(con, registry, "clean")
    assert report.events_loaded == 3 and report.events_quarantined == 0
    rows = con.execute("select user_id, item_id, timestamp_s, ingest_order from raw.events order by all").fetchall()
    assert rows == [("a", "x", None, 1), ("a", "y", None, 2), ("b", "x", None, 3)]


def test_an_old_warehouse_accepts_timestamp_less_events(tmp_path: Path) -> None:
    """A warehouse created when timestamp_s was NOT NULL is migrated on the next ingestion."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create schema raw")
    con.execute("create table raw.events (dataset varchar not null, source_file varchar not null, "
                "line_number bigint not null, ingest_order bigint not null, event_id bigint, "
                "user_id varchar not null, item_id varchar not null, event_type varchar, "
                "timestamp_s double not null, rating double, review_text varchar)")
    (tmp_path / "clean.csv").write_text("user_id,item_id\na,x\n")
    registry = parse_registry(REGISTRY.replace("item_id: item_id, timestamp: timestamp}", "item_id: item_id}"),
                              base_dir=tmp_path)
    assert ingest_dataset(con, registry, "clean").events_loaded == 1


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_a_mapped_column_no_line_has_is_an_error_before_anything_is_kept(tmp_path: Path, file_format: str) -> None:
    """A typo in datasets.yaml names the column instead of quarantining every line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"user_id": "a", "item_id": "x", "timestamp": 1_500_000_000},
            {"user_id": "b", "item_id": "y", "timestamp": 1_500_000_001}]
    if file_format == "jsonl":
        (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "events.jsonl")
    typo = REGISTRY.replace("path: clean.csv\n      format: csv", f"path: events.jsonl\n      format: {file_format}")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    good = parse_registry(typo, base_dir=tmp_path)
    assert ingest_dataset(con, good, "clean").events_loaded == 2
    before = _snapshot(con)
    typo = typo.replace("timestamp: timestamp}", "timestamp: timestmp}")
    with pytest.raises(IngestError, match="timestmp"):
        ingest_dataset(con, parse_registry(typo, base_dir=tmp_path), "clean")
    assert _snapshot(con) == before  # the failed run rolled back; the previous rows stay


def test_a_catalog_column_no_line_has_is_an_error(registry: DatasetRegistry, tmp_path: Path) -> None:
    text = REGISTRY.replace("columns: {item_id: item, title: title, categories: cats}",
                            "columns: {item_id: item, title: titel, categories: cats}")
    with pytest.raises(IngestError, match="titel"):
        ingest_dataset(duckdb.connect(str(tmp_path / "w.duckdb")), parse_registry(text, base_dir=tmp_path), "broken")
