"""One setting of a model's config dataclass: its default and what it means, held once.

The library dataclasses (`SASRecConfig`, `EAGERConfig`, ...) hold every default of their model; the
orchestration layer builds the Dagster run config from them (`orchestration/asset_config.py`) and
shows these descriptions in the launchpad, so neither the default nor its meaning is written twice.
"""

from dataclasses import Field, field
from typing import Any


def setting(default: Any, description: str) -> Any:
    """A dataclass field with `default` and a one-line `description` (read by the Dagster config built from it)."""
    return field(default=default, metadata={"description": description})


def description_of(dataclass_field: Field[Any]) -> str | None:
    """The description `setting` attached to a dataclass field, or None."""
    return dataclass_field.metadata.get("description")
