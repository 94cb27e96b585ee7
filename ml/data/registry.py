"""The dataset registry (`datasets.yaml`): typed, validated description of every dataset."""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

# Dataset names become Dagster partition keys, dbt vars and file-system folders: keep them tame.
DatasetName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class FileFormat(StrEnum):
    """Supported raw file formats (any of them may be gzip-compressed, detected by a `.gz` suffix)."""

    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


class TimestampUnit(StrEnum):
    """Unit of a numeric raw timestamp."""

    SECONDS = "s"
    MILLISECONDS = "ms"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventColumns(_Strict):
    """Maps our event fields to the raw file's column names (None = the dataset lacks that field).

    Without a timestamp (many public logs have only an event id or the line order) events are ordered
    by event id, else by line order, and sessions are unknown (NULL).
    """

    user_id: str
    item_id: str
    timestamp: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    rating: str | None = None
    review_text: str | None = None


class ItemColumns(_Strict):
    """Maps our item fields to the raw catalog's column names (None = the dataset lacks that field)."""

    item_id: str
    title: str | None = None
    description: str | None = None
    categories: str | None = None
    brand: str | None = None


class SourceFile(_Strict):
    """One raw file of a dataset, its format, and the CSV dialect when it is CSV."""

    path: str
    format: FileFormat
    csv_delimiter: str = ","
    csv_header: bool = True

    @field_validator("csv_delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("csv_delimiter must be a single character")
        return value


class EventSource(SourceFile):
    """The raw interaction log of a dataset."""

    columns: EventColumns
    timestamp_unit: TimestampUnit = TimestampUnit.SECONDS


class ItemSource(SourceFile):
    """The raw item catalog of a dataset."""

    columns: ItemColumns
    # A categories field that is a delimited string (CSV) rather than a list (JSON) is split on this.
    category_separator: str | None = None
    # Extra raw columns kept as item attributes and used in the item text (e.g. a movie's year).
    attribute_columns: tuple[str, ...] = ()


class DatasetSettings(_Strict):
    """Per-dataset knobs of the data layer; they reach dbt as vars."""

    k_core: int = Field(default=5, ge=1)
    session_gap_minutes: float = Field(default=30.0, gt=0)
    min_rating: float | None = None
    # Sanity bounds for timestamps in unix seconds (defaults: 1990-01-01 .. 2100-01-01).
    min_timestamp_s: int = 631_152_000
    max_timestamp_s: int = 4_102_444_800
    # Raw lines or fields larger than these go to quarantine instead of the warehouse.
    max_line_bytes: int = Field(default=1_000_000, gt=0)
    max_field_chars: int = Field(default=20_000, gt=0)
    # Data check: the share of quarantined event lines above which downstream assets are blocked.
    max_quarantine_rate: float = Field(default=0.01, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered_bounds(self) -> DatasetSettings:
        if self.min_timestamp_s >= self.max_timestamp_s:
            raise ValueError("min_timestamp_s must be below max_timestamp_s")
        return self


class DatasetConfig(_Strict):
    """One registry entry: a dataset's files, column mapping and settings."""

    name: DatasetName
    description: str = ""
    events: EventSource
    items: ItemSource | None = None
    settings: DatasetSettings = DatasetSettings()

    @model_validator(mode="after")
    def _rating_filter_needs_ratings(self) -> DatasetConfig:
        if self.settings.min_rating is not None and self.events.columns.rating is None:
            raise ValueError("settings.min_rating is set but events.columns maps no rating: every event would "
                             "be filtered out; map the rating column or drop min_rating")
        return self

    @property
    def has_timestamps(self) -> bool:
        """Whether the log maps a timestamp (without one: file or event-id order, no sessions)."""
        return self.events.columns.timestamp is not None

    @property
    def has_ratings(self) -> bool:
        """Whether the log maps a rating."""
        return self.events.columns.rating is not None

    @property
    def has_item_text(self) -> bool:
        """Whether a catalog maps any text field (without one every item's text is "Item <id>")."""
        if self.items is None:
            return False
        columns = self.items.columns
        text_fields = (columns.title, columns.description, columns.categories, columns.brand)
        return any(field is not None for field in text_fields) or bool(self.items.attribute_columns)

    def skipped_for_missing_fields(self) -> dict[str, str]:
        """What the pipeline leaves out for this dataset, keyed by the missing field, for asset metadata."""
        skipped: dict[str, str] = {}
        if not self.has_timestamps:
            skipped["timestamp"] = ("sequences in event-id or file order; no sessions, no first/last event "
                                    "time, no time-based figures")
        if not self.has_ratings:
            skipped["rating"] = "no rating filter; interactions are implicit"
        if not self.has_item_text:
            skipped["item_text"] = "item texts, prompts and text embeddings use 'Item <id>'"
        return skipped

    def resolve(self, base_dir: Path, relative: str) -> Path:
        """Absolute path of a registry path (relative paths are relative to the registry's folder)."""
        path = Path(relative)
        return path if path.is_absolute() else (base_dir / path).resolve()

    def fingerprint(self) -> str:
        """Stable hash of this entry's configuration (a change means the dataset must be rebuilt)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


DEFAULT_RAW_DIR = "data/raw"


class DatasetRegistry(_Strict):
    """All datasets of the project, keyed by name, plus the one the main job runs by default.

    Every raw file must resolve (symlinks followed) inside `raw_dir` (relative to the registry's
    folder, default data/raw/), so that an entry cannot read an arbitrary file of the machine into the
    warehouse and the UI's quarantine sample; `allow_paths_outside_raw_dir: true` lifts the rule.
    """

    base_dir: Path
    default_dataset: str
    datasets: dict[str, DatasetConfig]
    raw_dir: str = DEFAULT_RAW_DIR
    allow_paths_outside_raw_dir: bool = False

    @model_validator(mode="after")
    def _default_exists(self) -> DatasetRegistry:
        if self.default_dataset not in self.datasets:
            raise ValueError(
                f"default_dataset {self.default_dataset!r} is not in the registry "
                f"(known: {sorted(self.datasets)})"
            )
        return self

    @model_validator(mode="after")
    def _paths_inside_raw_dir(self) -> DatasetRegistry:
        if self.allow_paths_outside_raw_dir:
            return self
        base = self.base_dir.resolve()
        raw_root = (base / self.raw_dir).resolve()
        if not raw_root.is_relative_to(base):
            raise ValueError(f"raw_dir {self.raw_dir!r} must be a folder inside the registry's folder {base}")
        for name, dataset in self.datasets.items():
            sources = [("events", dataset.events)] + ([("items", dataset.items)] if dataset.items else [])
            for kind, source in sources:
                if not dataset.resolve(base, source.path).is_relative_to(raw_root):
                    raise ValueError(
                        f"dataset {name!r}: {kind} path {source.path!r} is outside {raw_root}; move the file "
                        "there, or set allow_paths_outside_raw_dir: true at the top of the registry")
        return self

    @property
    def names(self) -> list[str]:
        """Dataset names in registry order."""
        return list(self.datasets)

    def get(self, name: str) -> DatasetConfig:
        """The entry for `name`, or a KeyError naming the known datasets."""
        try:
            return self.datasets[name]
        except KeyError:
            raise KeyError(f"unknown dataset {name!r}; the registry has {sorted(self.datasets)}") from None

    def event_path(self, name: str) -> Path:
        """Absolute path of a dataset's raw event log."""
        dataset = self.get(name)
        return dataset.resolve(self.base_dir, dataset.events.path)

    def item_path(self, name: str) -> Path | None:
        """Absolute path of a dataset's raw item catalog, or None when it has none."""
        dataset = self.get(name)
        return dataset.resolve(self.base_dir, dataset.items.path) if dataset.items else None

    def raw_files(self, name: str) -> list[Path]:
        """Every raw file of a dataset (events first)."""
        item_path = self.item_path(name)
        return [self.event_path(name)] + ([item_path] if item_path else [])


class RegistryError(ValueError):
    """The registry file is missing, not YAML, or does not describe valid datasets."""


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def parse_registry(text: str, base_dir: Path) -> DatasetRegistry:
    """Parse registry YAML text; relative file paths resolve against `base_dir`."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RegistryError(f"registry is not valid YAML: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("datasets"), dict):
        raise RegistryError("registry must be a mapping with a 'datasets' mapping")
    if not document["datasets"]:
        raise RegistryError("registry lists no datasets")
    datasets: dict[str, DatasetConfig] = {}
    for name, entry in document["datasets"].items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise RegistryError(f"dataset name {name!r} must match {_NAME_RE.pattern}")
        if not isinstance(entry, dict):
            raise RegistryError(f"dataset {name!r}: entry must be a mapping")
        try:
            datasets[name] = DatasetConfig.model_validate({"name": name, **entry})
        except ValueError as error:
            raise RegistryError(f"dataset {name!r}: {error}") from error
    default = document.get("default_dataset", next(iter(datasets)))
    unknown = sorted(set(document) - {"datasets", "default_dataset", "raw_dir", "allow_paths_outside_raw_dir"})
    if unknown:
        raise RegistryError(f"unknown top-level registry keys {unknown}")
    options = {key: document[key] for key in ("raw_dir", "allow_paths_outside_raw_dir") if key in document}
    try:
        return DatasetRegistry(base_dir=base_dir, default_dataset=default, datasets=datasets, **options)
    except ValueError as error:
        raise RegistryError(str(error)) from error


def load_registry(path: Path) -> DatasetRegistry:
    """Read and validate the registry file at `path`."""
    if not path.is_file():
        raise RegistryError(f"dataset registry not found at {path}")
    return parse_registry(path.read_text(encoding="utf-8"), base_dir=path.resolve().parent)
