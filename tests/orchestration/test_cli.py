"""The main-job command line: runs a job for a partition and prints where the results are."""

from pathlib import Path

import pytest

from orchestration.cli import main


def test_run_prints_results_for_the_dataset(warehouse_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # an ephemeral instance, not the project's history
    assert main(["run", "--dataset", "movielens-100k", "--job", "data_layer_job"]) == 0
    out = capsys.readouterr().out
    assert f"results in the DuckDB warehouse {warehouse_path}" in out
    assert "  users: 943" in out and "  items: 1349" in out and "  interactions: 99287" in out


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["run", "--dataset", "no-such-dataset"])
