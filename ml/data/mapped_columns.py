"""Registry column mappings against the raw file: a clear error for a mapped column the file does not have.

A typo in datasets.yaml would otherwise quarantine every line and surface only in the quarantine-rate
check. CSV headers and Parquet schemas are checked before anything is read; JSON lines have no
header, so a column is missing when no parsed line has it (`raise_if_unseen`, shared with the
DuckDB-parsed JSON events in `ml.data.ingest`). The error rolls the ingestion transaction back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from ml.data.readers import RawRecord
from ml.data.registry import EventSource, FileFormat, ItemSource


class IngestError(RuntimeError):
    """A dataset cannot be ingested at all (missing file, mapped columns absent from the file)."""


def mapped_columns(source: EventSource | ItemSource) -> list[str]:
    """The raw column names a source's registry entry maps (and keeps as attributes)."""
    mapped = [column for column in source.columns.model_dump().values() if column]
    return mapped + list(getattr(source, "attribute_columns", ()))


def raise_if_unseen(path: Path, unseen: list[str]) -> None:
    """Fail, naming them, when mapped columns were on no parsed line of the file."""
    if unseen:
        raise IngestError(f"{path}: columns {sorted(unseen)} from the registry are on no line of the file")


def check_mapped_columns(
    path: Path, source: EventSource | ItemSource, records: Iterator[RawRecord],
) -> Iterator[RawRecord]:
    """Records passed through, failing for a mapped column the file lacks: CSV header and Parquet schema up
    front, JSON after the last line."""
    required = mapped_columns(source)
    if source.format is FileFormat.CSV:
        return _check_csv_header(path, records, required)
    if source.format is FileFormat.PARQUET:
        _check_parquet_schema(path, required)
        return records
    return _check_columns_seen(path, records, required)


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


def _check_parquet_schema(path: Path, required: list[str]) -> None:
    """Fail before anything is read if the Parquet schema lacks a mapped column."""
    names = set(pq.ParquetFile(path).schema_arrow.names)
    missing = [name for name in required if name not in names]
    if missing:
        raise IngestError(f"{path}: columns {missing} from the registry are not in the Parquet schema {sorted(names)}")


def _check_columns_seen(path: Path, records: Iterator[RawRecord], required: list[str]) -> Iterator[RawRecord]:
    """Pass records through; at the end, fail if a mapped column was on no parsed record."""
    unseen = set(required)
    parsed = 0
    for record in records:
        if unseen and record.fields is not None:
            parsed += 1
            unseen -= record.fields.keys()
        yield record
    if parsed:
        raise_if_unseen(path, list(unseen))
