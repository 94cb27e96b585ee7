"""The MLflow store against a real sqlite store in a temporary folder: runs, metrics, models, the registry."""

from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.exceptions import MlflowException

from ml.tracking.mlflow_store import (
    TrackingStore,
    find_runs,
    finish_run,
    log_epoch,
    log_metrics,
    log_model,
    metric_name,
    promote_champion,
    register_best_model,
    start_training_run,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_runs_metrics_models_and_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # MLflow's defaults (./mlruns, ./mlflow.db) would land here
    store = TrackingStore(tmp_path / "mlflow")
    run_id = start_training_run(store, "exp", "toy/sasrec", tags={"dataset": "toy", "dagster_run_id": "abc"},
                                params={"lr": 0.001, "long": "x" * 10_000})
    for epoch, ndcg in ((1, 0.1), (2, 0.3)):
        log_epoch(store, run_id, epoch, {"epoch": epoch, "loss": 1.0 / epoch, "valid_ndcg@10": ndcg})
    log_metrics(store, run_id, {"recall@10": 0.5}, prefix="test_")
    global_uri = mlflow.get_tracking_uri()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    uri = log_model(store, run_id, model)
    assert mlflow.get_tracking_uri() == global_uri, "log_model must restore the process-wide tracking URI"
    finish_run(store, run_id)

    run = store.client().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dagster_run_id"] == "abc"
    assert run.data.params["lr"] == "0.001" and run.data.params["long"].endswith("...")
    history = store.client().get_metric_history(run_id, "valid_ndcg_at_10")
    assert [(metric.step, metric.value) for metric in history] == [(1, 0.1), (2, 0.3)]
    assert "epoch" not in run.data.metrics and run.data.metrics["test_recall_at_10"] == 0.5
    assert [found.info.run_id for found in find_runs(store, "exp", "tags.dataset = 'toy'")] == [run_id]

    mlflow.set_tracking_uri(store.tracking_uri)
    try:
        loaded = mlflow.pytorch.load_model(uri)
    finally:
        mlflow.set_tracking_uri(global_uri)
    x = torch.randn(4, 3)
    torch.testing.assert_close(loaded(x), model(x))

    first = register_best_model(store, "llmrec-toy", uri, run_id, {"valid_ndcg@10": 0.3}, {"model": "sasrec"})
    second = register_best_model(store, "llmrec-toy", uri, run_id, {"valid_ndcg@10": 0.3}, {"model": "sasrec"})
    assert (first, second) == ("1", "2")
    # Registering is not promoting: the alias moves only when the caller says the version passed its gate.
    with pytest.raises(MlflowException, match="champion"):
        store.client().get_model_version_by_alias("llmrec-toy", "champion")
    promote_champion(store, "llmrec-toy", second)
    champion = store.client().get_model_version_by_alias("llmrec-toy", "champion")
    assert str(champion.version) == "2" and champion.tags == {"valid_ndcg_at_10": "0.3", "model": "sasrec"}
    assert champion.run_id == run_id
    # Everything landed in the store's folder: nothing in the working directory.
    assert not list(cwd.iterdir())
    assert any((tmp_path / "mlflow" / "artifacts").rglob("MLmodel"))


def test_metric_names_are_made_legal() -> None:
    assert metric_name("recall@10") == "recall_at_10" and metric_name("mrr") == "mrr"
