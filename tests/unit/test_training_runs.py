"""A tracked training run against a real MLflow store: params, epochs, best metrics, checkpoint, FAILED on error."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ml.models.checkpoints import load_checkpoint
from ml.models.sasrec import SASRec, SASRecConfig
from ml.tracking.mlflow_store import TrackingStore
from ml.tracking.training_runs import RunPlace, TrainingOutcome, track_training
from ml.train.early_stopping import EpochCallback

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ITEM_IDS = [f"i{index}" for index in range(6)]


def _place(tmp_path: Path) -> RunPlace:
    return RunPlace(TrackingStore(tmp_path / "mlflow"), "exp", tmp_path / "checkpoints", tmp_path / "results",
                    tags={"orchestrator_run": "r1"})


def test_a_tracked_run_logs_epochs_and_best_metrics_and_checkpoints_the_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = SASRecConfig(hidden_dim=8, n_layers=1, max_len=4)
    torch.manual_seed(0)
    model = SASRec(len(ITEM_IDS), config).eval()

    def train(on_epoch: EpochCallback) -> TrainingOutcome:
        history = []
        for epoch, ndcg in ((1, 0.2), (2, 0.4)):
            record = {"epoch": epoch, "loss": 1.0 / epoch, "valid_ndcg@10": ndcg, "seconds": 0.1}
            on_epoch(epoch, record)
            history.append(record)
        return TrainingOutcome(model, config, 2, {"ndcg@10": 0.4}, history, extra={"content": "item_text"})

    run = track_training(_place(tmp_path), "toy", "sasrec", ITEM_IDS, {"lr": 0.002}, train)

    client = _place(tmp_path).store.client()
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.data.params["lr"] == "0.002"
    assert logged.data.tags["orchestrator_run"] == "r1" and logged.data.tags["model"] == "sasrec"
    assert logged.data.metrics["best_valid_ndcg_at_10"] == 0.4 and logged.data.metrics["epochs_run"] == 2
    assert [m.value for m in client.get_metric_history(run.run_id, "valid_ndcg_at_10")] == [0.2, 0.4]
    assert run.curve_png is not None and run.curve_png.is_file()
    loaded = load_checkpoint(tmp_path / "checkpoints", "toy", "sasrec")
    assert loaded.version == run.checkpoint.version
    assert loaded.manifest["info"]["mlflow_run_id"] == run.run_id and loaded.manifest["info"]["content"] == "item_text"
    histories = [np.array([1, 2]), np.array([5])]
    torch.testing.assert_close(loaded.model.score(histories), model.score(histories))


def test_a_failing_training_marks_the_run_failed_and_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    def train(on_epoch: EpochCallback) -> TrainingOutcome:
        on_epoch(1, {"loss": 1.0})
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        track_training(_place(tmp_path), "toy", "sasrec", ITEM_IDS, {}, train)
    runs = _place(tmp_path).store.client().search_runs(
        [_place(tmp_path).store.client().get_experiment_by_name("exp").experiment_id])
    assert [run.info.status for run in runs] == ["FAILED"]
    assert not (tmp_path / "checkpoints" / "toy").exists()
