"""A training asset's Dagster config, built from its model's library config dataclass.

The library dataclass (`SASRecConfig`, `EAGERConfig`, ...) holds every default and its description
once (`ml/models/settings.py`). `asset_config` turns it into a `dg.Config` class with the same
fields (tuples as lists, which the launchpad edits), laid over by the quick preset's values
(`orchestration/presets.py`, `QUICK_DEFAULTS`), so the launchpad shows what a plain
materialization trains; the converged and tiny presets are run config on top of those.
"""

import dataclasses
import functools
import operator
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field
from pydantic.fields import FieldInfo

from ml.models.settings import description_of
from orchestration.presets import QUICK_DEFAULTS


class LibraryBackedConfig(dg.Config):
    """Base of a config built by `asset_config`: it knows its library dataclass and converts to it."""

    library_class: ClassVar[type[Any]]
    # The dataclass instance the fields' defaults were read from, before the quick layer.
    library_defaults: ClassVar[Any]

    def library_config(self, **fixed: Any) -> Any:
        """The library config these settings describe (`fixed` adds fields the asset sets itself)."""
        hints = typing.get_type_hints(self.library_class)
        values = {name: tuple(value) if typing.get_origin(hints[name]) is tuple else value
                  for name, value in self.model_dump().items() if name in hints}
        return self.library_class(**values, **fixed)


# Every config `asset_config` built, by training asset name (`tests/orchestration/test_asset_config.py` checks each).
ASSET_CONFIGS: dict[str, type[LibraryBackedConfig]] = {}


def _launchpad_type(annotation: Any) -> Any:
    """The annotation Dagster's config schema takes: `tuple[X, ...]` becomes `list[X]`, inside unions too."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return list[typing.get_args(annotation)[0]]  # type: ignore[index]
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, (_launchpad_type(arg) for arg in typing.get_args(annotation)))
    return annotation


def _launchpad_value(value: Any) -> Any:
    """A default the launchpad can show: tuples as lists."""
    return list(value) if isinstance(value, tuple) else value


def asset_config(
    name: str, defaults: Any, *, asset: str, module: str, doc: str, base: type[dg.Config] = dg.Config,
    exclude: frozenset[str] = frozenset(), extra: Mapping[str, tuple[Any, FieldInfo]] | None = None,
) -> type[LibraryBackedConfig]:
    """The `dg.Config` class of `asset`: the fields of the dataclass instance `defaults`, quick preset over them.

    `defaults` is usually the library class's own defaults (`SASRecConfig()`), or a named shape of it
    (`LEARNConfig.cpu_default()`); `exclude` leaves out fields the asset sets itself; `extra` adds the
    asset's own fields (which content set to read, say) as (annotation, pydantic Field); `base` adds
    shared settings (`ResumeSettings`); `module` is the defining module's `__name__`.
    """
    library_class = type(defaults)
    hints = typing.get_type_hints(library_class)
    quick = QUICK_DEFAULTS.get(asset, {})
    fields = {field.name: field for field in dataclasses.fields(library_class) if field.name not in exclude}
    unknown = sorted(set(quick) - set(fields) - set(extra or {}))
    if unknown:
        raise ValueError(f"QUICK_DEFAULTS[{asset!r}] names settings {name} does not have: {unknown}")
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__doc__": doc, "__module__": module, "__qualname__": name,
                                 "library_class": library_class, "library_defaults": defaults}
    for field_name, field in fields.items():
        default = quick.get(field_name, getattr(defaults, field_name))
        annotations[field_name] = _launchpad_type(hints[field_name])
        namespace[field_name] = Field(default=_launchpad_value(default), description=description_of(field))
    for field_name, (annotation, info) in (extra or {}).items():
        annotations[field_name] = annotation
        namespace[field_name] = Field(default=quick.get(field_name, info.default), description=info.description)
    namespace["__annotations__"] = annotations
    bases = (LibraryBackedConfig,) if base is dg.Config else (LibraryBackedConfig, base)
    config_class = typing.cast(type[LibraryBackedConfig], type(LibraryBackedConfig)(name, bases, namespace))
    ASSET_CONFIGS[asset] = config_class
    return config_class
