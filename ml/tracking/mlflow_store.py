"""The local MLflow store: runs, per-epoch metrics, logged models and the model registry, in sqlite + a folder.

Everything goes through an `MlflowClient` bound to this store, never MLflow's global "active run",
so nothing here depends on (or leaks) process-wide state. The one exception is
`mlflow.pytorch.log_model`, which only logs into the active run (and registering a `models:/` URI,
which resolves it through the global URI): `log_model` sets the tracking URI, resumes the run, logs,
and restores the previous URI; resuming and ending a run marks it FINISHED, so
callers log the model last and then call `finish_run` (a FAILED status set afterwards still wins).
A caller whose training fails calls `finish_run(store, run_id, "FAILED")`.

MLflow metric names allow letters, digits and `_-. /`; ours use `@` (recall@10), which `metric_name`
spells `_at_` (recall_at_10).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import Metric, Param, Run

logger = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value's length (sqlite store)
CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class TrackingStore:
    """An MLflow tracking and registry store at `root`: root/mlflow.db and root/artifacts/."""

    root: Path

    @property
    def db_path(self) -> Path:
        """The sqlite file of runs, metrics and the model registry."""
        return self.root / "mlflow.db"

    @property
    def artifact_root(self) -> Path:
        """Where run artifacts and logged models are stored."""
        return self.root / "artifacts"

    @property
    def tracking_uri(self) -> str:
        """sqlite:/// URI of the store (also the registry URI)."""
        return f"sqlite:///{self.db_path.resolve()}"

    def client(self) -> mlflow.MlflowClient:
        """A client for this store's tracking and registry (creating the folder on first use)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        """The id of experiment `name`, created with its artifacts under `artifact_root` if missing."""
        client = self.client()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = (self.artifact_root / name).resolve()
        location.mkdir(parents=True, exist_ok=True)
        return client.create_experiment(name, artifact_location=location.as_uri())


def metric_name(name: str) -> str:
    """An MLflow-legal metric name: '@' becomes '_at_' (recall@10 -> recall_at_10)."""
    return name.replace("@", "_at_")


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def start_training_run(
    store: TrackingStore, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, Any]
) -> str:
    """Create a run with `tags` and `params` (values stringified, long ones truncated); returns its id."""
    client = store.client()
    run = client.create_run(store.experiment_id(experiment), run_name=run_name,
                            tags={key: str(value) for key, value in tags.items()})
    client.log_batch(run.info.run_id, params=[Param(key, _param_value(value)) for key, value in params.items()])
    logger.info("MLflow run %s (%s) in %s", run.info.run_id, run_name, store.tracking_uri)
    return run.info.run_id


def _metrics(values: dict[str, float], prefix: str, step: int) -> list[Metric]:
    stamp = int(time.time() * 1000)
    return [Metric(metric_name(prefix + key), float(value), stamp, step) for key, value in values.items()
            if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))]


def log_epoch(store: TrackingStore, run_id: str, epoch: int, record: dict[str, float]) -> None:
    """Every numeric value of an epoch record (but `epoch` itself) as a metric at step = epoch."""
    metrics = _metrics({key: value for key, value in record.items() if key != "epoch"}, "", epoch)
    store.client().log_batch(run_id, metrics=metrics)


def log_metrics(store: TrackingStore, run_id: str, metrics: dict[str, float], prefix: str = "") -> None:
    """Final metrics (names prefixed, e.g. 'test_', and made MLflow-legal)."""
    store.client().log_batch(run_id, metrics=_metrics(metrics, prefix, 0))


def log_artifact(store: TrackingStore, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Copy a file into the run's artifacts."""
    store.client().log_artifact(run_id, str(path), artifact_path)


@contextmanager
def _global_uri(store: TrackingStore) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at `store` for the block, then restore them."""
    previous_tracking, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)


def log_model(store: TrackingStore, run_id: str, model: torch.nn.Module, name: str = "model") -> str:
    """Log a PyTorch module (pickled, with explicit requirements: no inference, no network) into the run; its URI."""
    with _global_uri(store), mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model, name=name, serialization_format="pickle",
            pip_requirements=[f"torch=={torch.__version__}", f"mlflow=={mlflow.__version__}"],
        )
    return info.model_uri


def finish_run(store: TrackingStore, run_id: str, status: str = "FINISHED") -> None:
    """Mark the run FINISHED (or FAILED / KILLED)."""
    store.client().set_terminated(run_id, status=status)


def register_best_model(
    store: TrackingStore, model_name: str, model_uri: str, run_id: str, metrics: dict[str, float],
    tags: dict[str, str],
) -> str:
    """Register `model_uri` as a new version of `model_name` with metric and other tags (not yet champion)."""
    client = store.client()
    if not client.search_registered_models(filter_string=f"name = '{model_name}'"):
        client.create_registered_model(model_name, description="Best model on validation NDCG@10 (llmrec).")
    # A models:/m-... source is resolved through the process-wide tracking URI, whatever the client's.
    with _global_uri(store):
        version = client.create_model_version(model_name, model_uri, run_id=run_id)
    for key, value in metrics.items():
        client.set_model_version_tag(model_name, version.version, metric_name(key), str(float(value)))
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, str(value))
    logger.info("registered %s version %s (%s)", model_name, version.version, model_uri)
    return str(version.version)


def promote_champion(store: TrackingStore, model_name: str, version: str) -> None:
    """Point the 'champion' alias at `version`: call it only once the version passed its gate and serves."""
    store.client().set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    logger.info("%s version %s is now %s", model_name, version, CHAMPION_ALIAS)


def find_runs(store: TrackingStore, experiment: str, filter_string: str = "") -> list[Run]:
    """Runs of an experiment matching an MLflow filter string (newest first)."""
    client = store.client()
    experiment_entity = client.get_experiment_by_name(experiment)
    if experiment_entity is None:
        return []
    return list(client.search_runs([experiment_entity.experiment_id], filter_string=filter_string,
                                   order_by=["attributes.start_time DESC"]))

