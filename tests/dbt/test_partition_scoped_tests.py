"""Every dbt data test judges only the partition (dataset) being built, never the whole shared table.

A test's own `where` config replaces the project-wide partition filter instead of adding to it; that
is how a timestamp-less dataset's NULL timestamps once failed every other dataset's build. The parsed
manifest shows each test's effective filter, so a new test that drops it fails here, before any build.
A test meant to look across datasets must say so in its name (`across_datasets`).
"""

import json
from pathlib import Path

from tests.conftest import run_dbt

PROBE = "probe-dataset"


def test_every_data_test_filters_on_the_dataset_being_built(tmp_path: Path) -> None:
    target = tmp_path / "target"
    run_dbt("parse", "--quiet", "--target-path", str(target),
            "--vars", json.dumps({"dataset": PROBE, "has_timestamps": False}))
    manifest = json.loads((target / "manifest.json").read_text())
    tests = {node["name"]: node["config"].get("where") for node in manifest["nodes"].values()
             if node["resource_type"] == "test"}
    assert len(tests) >= 15, sorted(tests)
    unscoped = {name: where for name, where in tests.items()
                if "across_datasets" not in name and f"dataset = '{PROBE}'" not in (where or "")}
    assert not unscoped, f"data tests without the partition filter: {unscoped}"
    # The timestamp tests stand down for a log without timestamps, and keep the partition filter.
    assert tests["not_null_stg_events_timestamp_s"] == f"dataset = '{PROBE}' and false"
