"""The raw-files sensor and the weekly schedule produce the right run requests."""

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from orchestration.assets.training import SASRecTrainingConfig
from orchestration.definitions import defs
from orchestration.paths import PROJECT_ROOT
from orchestration.presets import preset_run_config
from orchestration.resources import DatasetRegistryResource
from orchestration.schedules import weekly_full_retrain
from orchestration.sensors import raw_files_sensor


@pytest.fixture
def registry_copy(tmp_path: Path) -> Path:
    """The shipped registry and movielens files copied to a temp folder we may change."""
    shutil.copy(PROJECT_ROOT / "datasets.yaml", tmp_path / "datasets.yaml")
    for name in ("amazon-beauty", "movielens-100k"):
        shutil.copytree(PROJECT_ROOT / "data/raw" / name, tmp_path / "data/raw" / name)
    return tmp_path / "datasets.yaml"


def _tick(registry: Path, cursor: str | None) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(
        cursor=cursor, resources={"registry": DatasetRegistryResource(path=str(registry))}
    )
    return raw_files_sensor(context)


def test_first_tick_requests_every_dataset_then_nothing(registry_copy: Path) -> None:
    first = _tick(registry_copy, None)
    assert isinstance(first, dg.SensorResult)
    assert sorted(request.partition_key for request in first.run_requests) == ["amazon-beauty", "movielens-100k"]
    second = _tick(registry_copy, first.cursor)
    assert isinstance(second, dg.SkipReason)


def test_a_changed_raw_file_requests_only_its_dataset(registry_copy: Path) -> None:
    cursor = _tick(registry_copy, None).cursor
    ratings = registry_copy.parent / "data/raw/movielens-100k/ratings.csv"
    ratings.write_text(ratings.read_text() + "1,1,5,893286639\n")
    result = _tick(registry_copy, cursor)
    assert isinstance(result, dg.SensorResult)
    assert [request.partition_key for request in result.run_requests] == ["movielens-100k"]
    assert json.loads(result.cursor)["amazon-beauty"] == json.loads(cursor)["amazon-beauty"]


def test_a_reconfigured_dataset_is_requested_and_a_new_one_waits_for_its_partition(registry_copy: Path) -> None:
    cursor = _tick(registry_copy, None).cursor
    text = registry_copy.read_text()
    new_entry = text.split("  movielens-100k:", 1)[1].replace("k_core: 5", "k_core: 10")
    registry_copy.write_text(text.replace("session_gap_minutes: 30\n\n  movielens-100k", "session_gap_minutes: 45\n\n  movielens-100k")
                             + "\n  movielens-10core:" + new_entry)
    result = _tick(registry_copy, cursor)
    assert isinstance(result, dg.SensorResult)
    # movielens-10core is not a partition until the code location reloads: no request, not in the cursor.
    assert [request.partition_key for request in result.run_requests] == ["amazon-beauty"]
    assert "movielens-10core" not in json.loads(result.cursor)


def test_weekly_schedule_requests_one_run_per_dataset() -> None:
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 23, 3, 0, tzinfo=UTC),
        resources={"registry": DatasetRegistryResource(path=str(PROJECT_ROOT / "datasets.yaml"))},
    )
    requests = list(weekly_full_retrain(context))
    assert [(request.partition_key, request.run_key) for request in requests] == [
        ("amazon-beauty", "amazon-beauty@2026-11-23T03:00"),
        ("movielens-100k", "movielens-100k@2026-11-23T03:00"),
    ]
    # Unattended retrains train to convergence: the preset's overrides, valid config for the job.
    for request in requests:
        assert request.tags["training_preset"] == "converged"
        assert request.run_config == preset_run_config("converged")
        for asset in ("sasrec_model", "content_sasrec_model"):
            assert request.run_config["ops"][asset]["config"]["max_steps"] > SASRecTrainingConfig().max_steps
        # The fusion is the validation winner, the library default (hybrid): the preset does not override it.
        assert "fusion" not in request.run_config["ops"]["content_sasrec_model"]["config"]
        dg.validate_run_config(defs.resolve_job_def("full_pipeline_job"), request.run_config)


def test_unknown_training_presets_are_refused() -> None:
    assert preset_run_config("quick") == {"ops": {}}
    with pytest.raises(ValueError, match="unknown training preset"):
        preset_run_config("fast")


def test_quick_assets_keep_the_quick_defaults_under_another_preset() -> None:
    converged = preset_run_config("converged")
    run_config = preset_run_config("converged", keep_quick=["eager_model"])
    assert "eager_model" in converged["ops"]
    assert run_config["ops"] == {asset: ops for asset, ops in converged["ops"].items() if asset != "eager_model"}
    dg.validate_run_config(defs.resolve_job_def("full_pipeline_job"), run_config)
    with pytest.raises(ValueError, match="not training assets"):
        preset_run_config("converged", keep_quick=["model_evaluation"])
