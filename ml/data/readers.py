"""Line-exact readers for raw files: every physical record comes back, parsed or with the reason it failed."""

from __future__ import annotations

import csv
import gzip
import json
import re
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


@dataclass(frozen=True, slots=True)
class LineBatch:
    """Consecutive physical lines of a file: the first one's number, their text, and per-line reasons."""

    first_line: int
    texts: list[str]
    reasons: dict[int, str]  # offset in the batch -> why that line is unusable (empty, too long, bad UTF-8)


CHUNK_BYTES = 1 << 24
# A blank line (no character, or only whitespace) after the first; the first is checked apart, so the
# pattern starts with a literal newline, which the regex engine scans for at C speed.
_BLANK_LINE_AFTER_FIRST = re.compile(r"\n[^\S\n]*(?:\n|$)")
_BLANK_FIRST_LINE = re.compile(r"[^\S\n]*(?:\n|$)")
UTF8_BOM = b"\xef\xbb\xbf"


def _decode_lines(raw_lines: list[bytes], max_line_bytes: int) -> tuple[list[str], dict[int, str]]:
    """The text of each raw line (trailing CR dropped) and why unusable ones are (offset -> reason).

    A chunk with no long line and no bad byte, the common case, is decoded in one call; otherwise
    each line is decoded on its own so that only the bad ones are marked.
    """
    if raw_lines and max(map(len, raw_lines)) <= max_line_bytes:
        try:
            text = b"\n".join(raw_lines).decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            texts = text.split("\n")
            if "\r" in text:
                texts = [line[:-1] if line.endswith("\r") else line for line in texts]
            # Looking at every line costs a Python loop over millions; one regex pass over the chunk tells
            # whether any line is blank (re's \s is str.isspace's whitespace).
            if not _BLANK_FIRST_LINE.match(text) and not _BLANK_LINE_AFTER_FIRST.search(text):
                return texts, {}
            return texts, {offset: "empty_line" for offset, line in enumerate(texts) if not line or line.isspace()}
    texts: list[str] = []
    reasons: dict[int, str] = {}
    for raw in raw_lines:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > max_line_bytes:
            reasons[len(texts)] = "line_too_long"
            texts.append(_visible_text(raw[:QUARANTINE_TEXT_CHARS]))
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            reasons[len(texts)] = "invalid_utf8"
            line = _visible_text(raw[:QUARANTINE_TEXT_CHARS])
        else:
            if not line or line.isspace():
                reasons[len(texts)] = "empty_line"
        texts.append(line)
    return texts, reasons


def iter_line_batches(path: Path, max_line_bytes: int, batch_lines: int) -> Iterator[LineBatch]:
    """Every physical line, in batches, read in large chunks: the one line reader of every text format.

    A line's trailing newline (LF or CRLF) is not part of it; a last line without one still counts.
    A UTF-8 byte-order mark at the start of the file (as Excel and Windows tools write) is dropped.
    Unusable lines keep a visible text (bad bytes as backslash escapes, long lines cut) and their reason.
    """
    texts: list[str] = []
    reasons: dict[int, str] = {}
    first_line = 1
    pending = b""
    at_start = True
    with _open_binary(path) as handle:
        while True:
            chunk = handle.read(CHUNK_BYTES)
            if at_start:
                chunk = chunk.removeprefix(UTF8_BOM)
                at_start = False
            data = pending + chunk
            if chunk:
                raw_lines = data.split(b"\n")
                pending = raw_lines.pop()
            else:
                raw_lines = [data] if data else []
            chunk_texts, chunk_reasons = _decode_lines(raw_lines, max_line_bytes)
            reasons.update({len(texts) + offset: reason for offset, reason in chunk_reasons.items()})
            texts.extend(chunk_texts)
            while len(texts) >= batch_lines:
                yield LineBatch(first_line, texts[:batch_lines],
                                {offset: reason for offset, reason in reasons.items() if offset < batch_lines})
                first_line += batch_lines
                texts = texts[batch_lines:]
                reasons = {offset - batch_lines: reason for offset, reason in reasons.items()
                           if offset >= batch_lines}
            if not chunk:
                break
    if texts:
        yield LineBatch(first_line, texts, reasons)


def iter_text_lines(path: Path, max_line_bytes: int) -> Iterator[RawRecord]:
    """Every physical line as an unparsed record (fields None); unusable lines come with their reason."""
    for batch in iter_line_batches(path, max_line_bytes, batch_lines=65_536):
        for offset, text in enumerate(batch.texts):
            yield RawRecord(batch.first_line + offset, text, None, batch.reasons.get(offset))


def iter_jsonl(path: Path, max_line_bytes: int) -> Iterator[RawRecord]:
    """Read a JSON-lines file: one JSON object per physical line."""
    for record in iter_text_lines(path, max_line_bytes):
        if record.reason is not None:
            yield record
            continue
        number, text = record.line_number, record.raw_text
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            yield RawRecord(number, text, None, "unparseable", f"invalid JSON: {error.msg}")
            continue
        if not isinstance(value, dict):
            yield RawRecord(number, text, None, "unparseable", "JSON value is not an object")
            continue
        yield RawRecord(number, text, value)


def iter_csv(path: Path, max_line_bytes: int, delimiter: str, header: bool) -> Iterator[RawRecord]:
    """Read a CSV file, one record per physical line (text with newlines belongs in JSONL or Parquet)."""
    column_names: list[str] | None = None
    for record in iter_text_lines(path, max_line_bytes):
        if record.reason is not None:
            yield record
            continue
        number, text = record.line_number, record.raw_text
        if header and column_names is None:
            column_names = next(csv.reader([text], delimiter=delimiter))
            continue
        try:
            row = next(csv.reader([text], delimiter=delimiter, strict=True))
        except csv.Error as error:
            yield RawRecord(number, text, None, "unparseable", f"invalid CSV: {error}")
            continue
        names = column_names if column_names is not None else [str(i) for i in range(len(row))]
        if len(row) != len(names):
            yield RawRecord(number, text, None, "unparseable", f"expected {len(names)} fields, found {len(row)}")
            continue
        yield RawRecord(number, text, dict(zip(names, row, strict=True)))


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
