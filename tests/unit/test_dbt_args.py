"""The dbt CLI arguments Dagster builds for a partition, checked without running dbt."""

import json
from pathlib import Path

from ml.data.registry import parse_registry
from orchestration.assets.dbt import dbt_build_args, dbt_vars

REGISTRY = """
raw_dir: .
datasets:
  shop:
    events:
      path: e.csv
      format: csv
      columns: {user_id: u, item_id: i, timestamp: t, rating: r}
    settings: {k_core: 10, session_gap_minutes: 45, min_rating: 4}
"""


def test_partition_settings_become_dbt_vars(tmp_path: Path) -> None:
    dataset = parse_registry(REGISTRY, base_dir=tmp_path).get("shop")
    assert dbt_vars(dataset) == {"dataset": "shop", "k_core": 10, "session_gap_minutes": 45.0, "min_rating": 4.0,
                                 "has_timestamps": True}
    untimed = parse_registry(REGISTRY.replace("timestamp: t, ", ""), base_dir=tmp_path).get("shop")
    assert dbt_vars(untimed)["has_timestamps"] is False


def test_build_args_pass_the_vars_as_json(tmp_path: Path) -> None:
    dataset = parse_registry(REGISTRY, base_dir=tmp_path).get("shop")
    args = dbt_build_args(dataset)
    assert args[:2] == ["build", "--vars"]
    assert json.loads(args[2]) == dbt_vars(dataset)
