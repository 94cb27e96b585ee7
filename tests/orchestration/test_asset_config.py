"""The training assets' Dagster configs: built from the library dataclasses, the quick preset over them, nothing twice."""

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from ml.models.sasrec import SASRecConfig
from ml.models.settings import setting
from orchestration.asset_config import ASSET_CONFIGS, asset_config
from orchestration.assets.trained import TRAINING_ASSETS
from orchestration.presets import QUICK_DEFAULTS, TRAINING_PRESETS


def _launchpad(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def test_every_quick_layer_has_its_asset_config_and_every_config_is_a_training_asset() -> None:
    training_assets = {asset.key.to_user_string() for asset in TRAINING_ASSETS}
    assert set(ASSET_CONFIGS) <= training_assets
    assert set(QUICK_DEFAULTS) <= set(ASSET_CONFIGS)
    # Every preset names training assets that have a config to override.
    for preset, layers in TRAINING_PRESETS.items():
        assert set(layers) <= set(ASSET_CONFIGS), preset


@pytest.mark.parametrize("asset", sorted(ASSET_CONFIGS))
def test_config_defaults_are_the_library_defaults_with_the_quick_layer_over_them(asset: str) -> None:
    config_class = ASSET_CONFIGS[asset]
    defaults = config_class.library_defaults
    quick = {name: tuple(value) if isinstance(getattr(defaults, name), tuple) else value
             for name, value in QUICK_DEFAULTS.get(asset, {}).items() if name in defaults.__dataclass_fields__}
    library = config_class().library_config()
    assert library == dataclasses.replace(defaults, **quick)
    # The converted library config has the library's types back (tuples, not the launchpad's lists).
    for field in dataclasses.fields(library):
        if isinstance(getattr(defaults, field.name), tuple):
            assert isinstance(getattr(library, field.name), tuple), field.name


@pytest.mark.parametrize("asset", sorted(QUICK_DEFAULTS))
def test_the_quick_layer_only_holds_values_that_differ_from_the_library(asset: str) -> None:
    """A quick value equal to the library default would be the same default written twice."""
    library_defaults = ASSET_CONFIGS[asset].library_defaults
    for name, value in QUICK_DEFAULTS[asset].items():
        if name in library_defaults.__dataclass_fields__:
            assert _launchpad(getattr(library_defaults, name)) != value, f"{asset}.{name} restates the library default"


def test_descriptions_come_from_the_library_fields() -> None:
    config_class = ASSET_CONFIGS["sasrec_model"]
    library_field = SASRecConfig.__dataclass_fields__["patience"]
    assert config_class.model_fields["patience"].description == library_field.metadata["description"]
    # The asset's own settings keep theirs; resume settings come from their base class.
    assert "item_text" in (ASSET_CONFIGS["content_sasrec_model"].model_fields["content"].description or "")
    assert "resume" in config_class.model_fields


@dataclass(frozen=True)
class _Toy:
    grid: tuple[float, ...] = setting((0.0, 1.0), "A grid.")
    budget: int | None = None
    mode: Literal["a", "b"] = "a"


def test_a_built_config_round_trips_to_its_dataclass_and_refuses_unknown_quick_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(QUICK_DEFAULTS, "toy_model", {"budget": 7})
    toy_config = asset_config("ToyConfig", _Toy(), asset="toy_model", module=__name__, doc="Toy.")
    monkeypatch.delitem(ASSET_CONFIGS, "toy_model")
    config = toy_config(grid=[0.5], mode="b")
    assert toy_config.model_fields["grid"].description == "A grid."
    assert config.budget == 7
    assert config.library_config() == _Toy(grid=(0.5,), budget=7, mode="b")
    assert toy_config.library_defaults == _Toy()
    with pytest.raises(ValueError, match="budgets"):
        monkeypatch.setitem(QUICK_DEFAULTS, "toy_model", {"budgets": 7})
        asset_config("ToyConfig", _Toy(), asset="toy_model", module=__name__, doc="Toy.")
