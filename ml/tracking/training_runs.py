"""One tracked training run: an MLflow run around a training function, a checkpoint and a validation curve.

Every training asset does the same around its own `train`: open an MLflow run tagged with the
dataset, model and orchestrator run, log params, per-epoch metrics, the best validation metrics and
the model, plot the validation curve, write a self-contained checkpoint that names the MLflow run,
and mark the run FAILED if anything raises. This module does that once, without any orchestrator
import, so the Dagster assets only turn the result into asset metadata.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.evaluate.report import plot_training_curve
from ml.models.checkpoints import Checkpoint, TrainedModule, save_checkpoint
from ml.tracking.mlflow_store import (
    TrackingStore,
    finish_run,
    log_artifact,
    log_epoch,
    log_metrics,
    log_model,
    start_training_run,
)
from ml.train.early_stopping import EpochCallback

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training function hands back: the selected model and how training went."""

    model: TrainedModule
    config: Any  # the library config the checkpoint rebuilds the model from; None for popularity
    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # more facts for the checkpoint manifest
    # Text files (name -> content) logged as MLflow artifacts of the run, e.g. ED2's code tables.
    artifact_texts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, result: Any, extra: dict[str, Any] | None = None,
           artifact_texts: dict[str, str] | None = None) -> TrainingOutcome:
        """The outcome of a trainer's result (model, config, best_epoch, best_valid, history, extra?), plus `extra`."""
        return cls(result.model, result.config, result.best_epoch, result.best_valid, result.history,
                   extra={**getattr(result, "extra", {}), **(extra or {})}, artifact_texts=dict(artifact_texts or {}))


@dataclass(frozen=True)
class TrackedRun:
    """A finished tracked run: its MLflow ids, the checkpoint written and the curve plotted (None if no epochs)."""

    run_id: str
    model_uri: str
    checkpoint: Checkpoint
    outcome: TrainingOutcome
    curve_png: Path | None


@dataclass(frozen=True)
class RunPlace:
    """Where a run is recorded: MLflow store and experiment, checkpoint and results folders, and its tags."""

    store: TrackingStore
    experiment: str
    checkpoints_root: Path
    results_root: Path
    tags: dict[str, str] = field(default_factory=dict)


def track_training(
    place: RunPlace, dataset: str, name: str, item_ids: list[str], params: dict[str, Any],
    train: Callable[[EpochCallback], TrainingOutcome], epoch_log: logging.Logger | logging.LoggerAdapter = logger,
) -> TrackedRun:
    """Run `train(on_epoch)` inside an MLflow run named `<dataset>/<name>`, then checkpoint and log the model."""
    run_id = start_training_run(place.store, place.experiment, f"{dataset}/{name}",
                                tags={"dataset": dataset, "model": name, **place.tags}, params=params)

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        epoch_log.info("%s epoch %d %s", name, epoch, {key: round(value, 4) for key, value in record.items()})
        log_epoch(place.store, run_id, epoch, record)

    try:
        outcome = train(on_epoch)
        log_metrics(place.store, run_id, outcome.best_valid, prefix="best_valid_")
        log_metrics(place.store, run_id, {"best_epoch": outcome.best_epoch, "epochs_run": len(outcome.history)})
        # Scalar facts of the outcome (e.g. the chosen popularity beta) are metrics too, so runs can be compared.
        log_metrics(place.store, run_id, {key: float(value) for key, value in outcome.extra.items()
                                          if isinstance(value, int | float) and not isinstance(value, bool)})
        model_uri = log_model(place.store, run_id, outcome.model)
        curve = None
        if outcome.history:
            curve = plot_training_curve(outcome.history, place.results_root / dataset / f"{name}_training_curve.png",
                                        title=name)
            log_artifact(place.store, run_id, curve)
        if outcome.artifact_texts:
            with tempfile.TemporaryDirectory() as folder:
                for file_name, text in outcome.artifact_texts.items():
                    (Path(folder) / file_name).write_text(text)
                    log_artifact(place.store, run_id, Path(folder) / file_name)
        checkpoint = save_checkpoint(
            place.checkpoints_root, dataset, name, outcome.model, item_ids, outcome.config,
            {"mlflow_run_id": run_id, "mlflow_model_uri": model_uri, **place.tags,
             "best_epoch": outcome.best_epoch, "best_valid": outcome.best_valid, **outcome.extra},
        )
    except BaseException:
        finish_run(place.store, run_id, "FAILED")
        raise
    finish_run(place.store, run_id)
    return TrackedRun(run_id, model_uri, checkpoint, outcome, curve)
