"""What every training asset shares: the split it reads, MLflow tracking, resume settings, the decorator.

Imported by the training asset modules (`training`, `generative`, `graph_cf`, `ed2`, `blend`); holds no asset.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg
from dagster_dbt import get_asset_key_for_model
from pydantic import Field

from ml.data.embedding_store import StoredEmbeddings, read_item_content
from ml.data.sequences import SequenceData, load_sequences
from ml.data.versioned import NoCurrentVersion
from ml.evaluate.report import epoch_table_markdown, png_markdown
from ml.tracking.training_runs import RunPlace, TrainingOutcome, track_training
from ml.train.early_stopping import EpochCallback
from ml.train.resume import ResumePolicy
from orchestration.assets.dbt import data_layer_dbt
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, ArtifactStoreResource, MlflowResource, WarehouseResource

USER_SEQUENCES = get_asset_key_for_model([data_layer_dbt], "user_sequences")
TRAINING_EXPERIMENT = "llmrec-training"
ASSET_SUFFIX = "_model"


def checkpoint_name(asset_key: dg.AssetKey) -> str:
    """The checkpoint (and MLflow model) a training asset writes: its name without the `_model` suffix."""
    name = asset_key.path[-1]
    if not name.endswith(ASSET_SUFFIX):
        raise ValueError(f"training asset {name} must be named <checkpoint>{ASSET_SUFFIX}")
    return name.removesuffix(ASSET_SUFFIX)


def training_asset(deps: list[Any], compute_kind: str = "pytorch") -> Callable[[Callable[..., Any]], Any]:
    """The decorator of a training asset: partitioned by dataset, in the training group and the DuckDB pool."""
    return dg.asset(deps=deps, group_name="training", partitions_def=dataset_partitions, pool=DUCKDB_POOL,
                    compute_kind=compute_kind)


class ResumeSettings(dg.Config):
    """Whole-state checkpoints on a timer, so a killed training run continues where it stopped."""

    resume: bool = Field(default=True, description="Continue from the partial training state a killed run left, "
                         "when its config and data match (else the run fails, naming what differs).")
    checkpoint_every_minutes: float = Field(default=10.0, ge=0, description="Save the whole training state at the "
                                            "first epoch end after this many minutes (0 = every epoch).")

    def resume_policy(self, artifacts: ArtifactStoreResource, dataset: str, model: str) -> ResumePolicy:
        """Where and how often `model`'s partial state is kept for `dataset` (`model` = its checkpoint name)."""
        return ResumePolicy(artifacts.partial_training_path(dataset, model), self.checkpoint_every_minutes,
                            self.resume)



def train_tracked(
    context: dg.AssetExecutionContext, mlflow: MlflowResource, artifacts: ArtifactStoreResource,
    data: SequenceData, params: dict[str, Any], train: Callable[[EpochCallback], TrainingOutcome],
) -> dg.MaterializeResult:
    """Train through `track_training` (MLflow run, checkpoint, curve) and describe the result as asset metadata.

    The checkpoint and MLflow model are named after the asset (`checkpoint_name`).
    """
    name = checkpoint_name(context.asset_key)
    place = RunPlace(mlflow.store(), TRAINING_EXPERIMENT, artifacts.checkpoints_root(), artifacts.results_root(),
                     tags={"dagster_run_id": context.run.run_id,
                           "dagster_asset": context.asset_key.to_user_string()})
    run = track_training(place, data.dataset, name, data.item_ids, params, train, epoch_log=context.log)
    outcome = run.outcome
    metadata: dict[str, Any] = {
        "checkpoint": dg.MetadataValue.path(str(run.checkpoint.path)),
        "checkpoint_version": run.checkpoint.version,
        "mlflow_run_id": run.run_id,
        "mlflow_model_uri": run.model_uri,
        "best_epoch": outcome.best_epoch,
        **{f"valid_{metric}": round(value, 5) for metric, value in outcome.best_valid.items()},
    }
    if run.curve_png is not None:
        metadata["training_curve"] = dg.MetadataValue.md(epoch_table_markdown(outcome.history))
        metadata["training_plot"] = dg.MetadataValue.md(png_markdown(run.curve_png, f"{name} validation curve"))
    return dg.MaterializeResult(metadata=metadata)


def load_split(warehouse: WarehouseResource, dataset: str) -> SequenceData:
    """One dataset's leave-one-out split and item vocabulary, read from the marts."""
    with warehouse.connect(read_only=True) as con:
        return load_sequences(con, dataset)


def read_content(artifacts: ArtifactStoreResource, data: SequenceData, content_name: str) -> StoredEmbeddings:
    """The current published `content_name` item embeddings; a Dagster failure saying what to do when none is."""
    try:
        return read_item_content(artifacts.embeddings_root(), data.dataset, content_name, data.item_ids)
    except NoCurrentVersion as missing:
        raise dg.Failure(f"no published {content_name} embeddings for {data.dataset}: materialize them first "
                         f"({content_name} is published once every item is encoded; see its left_for_later_runs)"
                         ) from missing


