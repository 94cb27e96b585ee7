"""Line-exact readers for raw files: every physical record comes back, parsed or with the reason it failed."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq

from ml.data.registry import FileFormat, SourceFile

# Raw text kept in quarantine rows is capped so one huge bad line cannot bloat the warehouse.
QUARANTINE_TEXT_CHARS = 4_000


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record of a raw file: its 1-based line number, raw text, parsed fields or a failure reason."""

    line_number: int
    raw_text: str
    fields: dict[str, Any] | None
    reason: str | None = None
    detail: str | None = None


def _open_binary(path: Path) -> IO[bytes]:
    """Open a raw file for byte reading, transparently gunzipping `.gz` files."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _visible_text(raw: bytes) -> str:
    """Decode bytes for display in quarantine: invalid UTF-8 bytes shown as \\x escapes, never lost."""
    return raw.decode("utf-8", errors="backslashreplace")


def _strip_newline(raw: bytes) -> bytes:
    return raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw


def _prevalidated_lines(
    handle: IO[bytes], max_line_bytes: int
) -> Iterator[tuple[int, bytes, str | None, str | None]]:
    """Yield (line_number, raw bytes, decoded text or None, reason or None) for each physical line."""
    for line_number, raw_line in enumerate(handle, start=1):
        raw = _strip_newline(raw_line)
        if len(raw) > max_line_bytes:
            yield line_number, raw, None, "line_too_long"
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield line_number, raw, None, "invalid_utf8"
            continue
        yield line_number, raw, text, None


def iter_jsonl(path: Path, max_line_bytes: int) -> Iterator[RawRecord]:
    """Read a JSON-lines file: one JSON object per physical line."""
    with _open_binary(path) as handle:
        for line_number, raw, text, reason in _prevalidated_lines(handle, max_line_bytes):
            if text is None:
                yield RawRecord(line_number, _visible_text(raw[:QUARANTINE_TEXT_CHARS]), None, reason)
                continue
            if not text.strip():
                yield RawRecord(line_number, text, None, "empty_line")
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                yield RawRecord(line_number, text, None, "unparseable", f"invalid JSON: {error.msg}")
                continue
            if not isinstance(value, dict):
                yield RawRecord(line_number, text, None, "unparseable", "JSON value is not an object")
                continue
            yield RawRecord(line_number, text, value)


def iter_csv(path: Path, max_line_bytes: int, delimiter: str, header: bool) -> Iterator[RawRecord]:
    """Read a CSV file, one record per physical line (text with newlines belongs in JSONL or Parquet)."""
    column_names: list[str] | None = None
    with _open_binary(path) as handle:
        for line_number, raw, text, reason in _prevalidated_lines(handle, max_line_bytes):
            if text is None:
                yield RawRecord(line_number, _visible_text(raw[:QUARANTINE_TEXT_CHARS]), None, reason)
                continue
            if header and column_names is None:
                column_names = next(csv.reader([text], delimiter=delimiter), [])
                continue
            if not text.strip():
                yield RawRecord(line_number, text, None, "empty_line")
                continue
            try:
                row = next(csv.reader([text], delimiter=delimiter, strict=True))
            except csv.Error as error:
                yield RawRecord(line_number, text, None, "unparseable", f"invalid CSV: {error}")
                continue
            names = column_names if column_names is not None else [str(i) for i in range(len(row))]
            if len(row) != len(names):
                yield RawRecord(
                    line_number, text, None, "unparseable", f"expected {len(names)} fields, found {len(row)}"
                )
                continue
            yield RawRecord(line_number, text, dict(zip(names, row, strict=True)))


def iter_parquet(path: Path) -> Iterator[RawRecord]:
    """Read a Parquet file row by row; the 'line number' is the 1-based row index."""
    parquet = pq.ParquetFile(path)
    row_number = 0
    for batch in parquet.iter_batches(batch_size=65_536):
        for row in batch.to_pylist():
            row_number += 1
            yield RawRecord(row_number, json.dumps(row, default=str, ensure_ascii=False), row)


def iter_records(path: Path, source: SourceFile, max_line_bytes: int) -> Iterator[RawRecord]:
    """Every record of a raw file, in file order, whatever its format."""
    if source.format is FileFormat.JSONL:
        return iter_jsonl(path, max_line_bytes)
    if source.format is FileFormat.CSV:
        return iter_csv(path, max_line_bytes, source.csv_delimiter, source.csv_header)
    return iter_parquet(path)
