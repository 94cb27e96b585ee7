"""Training assets: the popularity baseline, SASRec (ID-only baseline) and LEARN, each tracked in MLflow.

Every training asset trains on the train split of one dataset, selects its epoch on validation
NDCG@10 (the test split is never read here), writes a self-contained checkpoint
(`ml/models/checkpoints.py`) and logs the run to MLflow: parameters, per-epoch metrics, the best
validation metrics and the model, tagged with the Dagster run id so a run links back to its
materialization. Test metrics are added to the same MLflow run by the evaluation asset.
"""

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

import dagster as dg
import numpy as np
from dagster_dbt import get_asset_key_for_model
from pydantic import Field

from ml.data.embedding_store import read_embeddings
from ml.data.sequences import SequenceData, load_sequences
from ml.data.versioned import NoCurrentVersion
from ml.evaluate.ranking import evaluate_model
from ml.evaluate.report import plot_training_curve, png_markdown
from ml.models.checkpoints import Checkpoint, TrainedModule, save_checkpoint
from ml.models.learn import LEARNConfig, TargetSpan
from ml.models.popularity import PopularityModel
from ml.models.sasrec import LRSchedule, SASRecConfig
from ml.tracking.mlflow_store import (
    TrackingStore,
    finish_run,
    log_artifact,
    log_epoch,
    log_metrics,
    log_model,
    start_training_run,
)
from ml.train.learn_training import train_learn
from ml.train.sasrec_training import train_sasrec
from orchestration.assets.dbt import data_layer_dbt
from orchestration.assets.embeddings import ITEM_LLM, ITEM_TEXT, item_llm_embeddings, item_text_embeddings
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, ArtifactStoreResource, MlflowResource, WarehouseResource

USER_SEQUENCES = get_asset_key_for_model([data_layer_dbt], "user_sequences")
TRAINING_EXPERIMENT = "llmrec-training"
POPULARITY, SASREC, LEARN = "popularity", "sasrec", "learn"
MODEL_NAMES = (POPULARITY, SASREC, LEARN)


class SASRecTrainingConfig(dg.Config):
    """SASRec settings (the ID-only baseline; its item table also feeds the behaviour codes)."""

    hidden_dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    lr: float = 1e-3
    lr_schedule: LRSchedule = "constant"
    warmup_steps: int = 0
    batch_size: int = 256
    max_epochs: int = Field(default=20, description="Upper bound; early stopping on validation NDCG@10 ends sooner.")
    patience: int = 3
    seed: int = 0
    device: str = "auto"

    def sasrec(self) -> SASRecConfig:
        """The equivalent library config."""
        return SASRecConfig(**self.model_dump())


class LEARNTrainingConfig(dg.Config):
    """LEARN settings. The defaults are the CPU shape (`LEARNConfig.cpu_default`); the paper's is 768 x 12 layers."""

    content: Literal["item_text", "item_llm"] = Field(
        default="item_text",
        description="Frozen content embeddings: item_text (MiniLM sentence encoder) or item_llm (frozen LLM, CEX).",
    )
    hidden_dim: int = 128
    n_layers: int = 2
    n_heads: int = 2
    output_dim: int = 64
    max_len: int = 50
    dropout: float = 0.1
    item_tower: Literal["shared", "self_attention_only", "content_projection"] = "shared"
    temperature: float = 0.05
    learn_temperature: bool = True
    zero_init_residual: bool = True
    logq_correction: bool = False
    sampling: bool = Field(default=False, description="Two-stage sampling (the paper's industrial setting).")
    target_span: TargetSpan = Field(
        default="next", description="Target = only the item after the split point (next: the paper's Amazon "
        "setting) or every item after it (rest: its industrial one).")
    n_history_samples: int = 10
    n_target_samples: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 128
    max_epochs: int = 15
    patience: int = 3
    seed: int = 0
    device: str = "auto"

    def learn(self) -> LEARNConfig:
        """The equivalent library config."""
        return LEARNConfig(**self.model_dump(exclude={"content"}))


# Named training settings on top of the asset defaults. The defaults ("quick") keep a cold `make run`
# near 20 minutes on 2 CPU cores; "converged" trains until validation stops improving, for unattended
# runs (the weekly retrain) and the training benchmark. Measured figures for both are in README.md.
TRAINING_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {},
    "converged": {
        "sasrec_model": {"dropout": 0.5, "batch_size": 128, "lr": 3e-3, "lr_schedule": "cosine", "warmup_steps": 100,
                         "max_epochs": 60, "patience": 10},
        "learn_model": {"max_epochs": 40, "patience": 10},
    },
}


def preset_run_config(preset: str) -> dict[str, Any]:
    """The Dagster run config of a training preset: each training asset's overrides of its defaults."""
    if preset not in TRAINING_PRESETS:
        raise ValueError(f"unknown training preset {preset!r}; known: {sorted(TRAINING_PRESETS)}")
    return {"ops": {asset: {"config": dict(overrides)} for asset, overrides in TRAINING_PRESETS[preset].items()}}


def _epoch_table(history: list[dict[str, float]]) -> str:
    lines = ["| epoch | loss | valid recall@10 | valid ndcg@10 | seconds |", "|---|---|---|---|---|"]
    lines += [
        f"| {int(r['epoch'])} | {r['loss']:.4f} | {r.get('valid_recall@10', float('nan')):.4f} | "
        f"{r.get('valid_ndcg@10', float('nan')):.4f} | {r['seconds']:.1f} |"
        for r in history
    ]
    return "\n".join(lines)


def _train_tracked(
    context: dg.AssetExecutionContext,
    store: TrackingStore,
    artifacts: ArtifactStoreResource,
    data: SequenceData,
    name: str,
    params: dict[str, Any],
    train: Callable[[Callable[[int, dict[str, float]], None]], tuple[TrainedModule, Any, dict[str, Any]]],
) -> dg.MaterializeResult:
    """Run `train(on_epoch)` inside an MLflow run, checkpoint the model and describe it as asset metadata.

    `train` returns (model, library config or None, info with best_epoch, best_valid and history).
    """
    run_id = start_training_run(
        store, TRAINING_EXPERIMENT, f"{data.dataset}/{name}",
        tags={"dataset": data.dataset, "model": name, "dagster_run_id": context.run.run_id,
              "dagster_asset": context.asset_key.to_user_string()},
        params=params,
    )

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        context.log.info("%s epoch %d %s", name, epoch, {k: round(v, 4) for k, v in record.items()})
        log_epoch(store, run_id, epoch, record)

    try:
        model, config, info = train(on_epoch)
        log_metrics(store, run_id, info["best_valid"], prefix="best_valid_")
        log_metrics(store, run_id, {"best_epoch": info["best_epoch"], "epochs_run": len(info["history"])})
        model_uri = log_model(store, run_id, model)
        plot = None
        if info["history"]:
            plot = plot_training_curve(
                info["history"], artifacts.results_root() / data.dataset / f"{name}_training_curve.png", title=name
            )
            log_artifact(store, run_id, plot)
        checkpoint: Checkpoint = save_checkpoint(
            artifacts.checkpoints_root(), data.dataset, name, model, data.item_ids, config,
            {"mlflow_run_id": run_id, "mlflow_model_uri": model_uri, "dagster_run_id": context.run.run_id,
             "best_epoch": info["best_epoch"], "best_valid": info["best_valid"], **info.get("extra", {})},
        )
    except BaseException:
        finish_run(store, run_id, "FAILED")
        raise
    finish_run(store, run_id)
    metadata: dict[str, Any] = {
        "checkpoint": dg.MetadataValue.path(str(checkpoint.path)),
        "checkpoint_version": checkpoint.version,
        "mlflow_run_id": run_id,
        "mlflow_model_uri": model_uri,
        "best_epoch": info["best_epoch"],
        **{f"valid_{metric}": round(value, 5) for metric, value in info["best_valid"].items()},
    }
    if plot is not None:
        metadata["training_curve"] = dg.MetadataValue.md(_epoch_table(info["history"]))
        metadata["training_plot"] = dg.MetadataValue.md(png_markdown(plot, f"{name} validation curve"))
    return dg.MaterializeResult(metadata=metadata)


def _load(warehouse: WarehouseResource, dataset: str) -> SequenceData:
    with warehouse.connect(read_only=True) as con:
        return load_sequences(con, dataset)


@dg.asset(deps=[USER_SEQUENCES], group_name="training", partitions_def=dataset_partitions, pool=DUCKDB_POOL,
          compute_kind="numpy")
def popularity_model(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, artifacts: ArtifactStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The popularity baseline: items ranked by training interaction count, scored on validation."""
    data = _load(warehouse, context.partition_key)

    def train(_: Callable[[int, dict[str, float]], None]) -> tuple[TrainedModule, None, dict[str, Any]]:
        model = PopularityModel.fit(data.train, data.n_items)
        valid = evaluate_model(model.score, *data.history("valid")).metrics
        return model, None, {"best_epoch": 0, "best_valid": valid, "history": []}

    return _train_tracked(context, mlflow.store(), artifacts, data, POPULARITY, {"model": POPULARITY}, train)


@dg.asset(deps=[USER_SEQUENCES], group_name="training", partitions_def=dataset_partitions, pool=DUCKDB_POOL,
          compute_kind="pytorch")
def sasrec_model(
    context: dg.AssetExecutionContext, config: SASRecTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """SASRec, ID-only with full softmax cross-entropy, trained on the train split (epoch chosen on validation)."""
    data = _load(warehouse, context.partition_key)
    library_config = config.sasrec()

    def train(on_epoch: Callable[[int, dict[str, float]], None]) -> tuple[TrainedModule, Any, dict[str, Any]]:
        result = train_sasrec(data, library_config, on_epoch=on_epoch)
        return result.model, library_config, {"best_epoch": result.best_epoch, "best_valid": result.best_valid,
                                              "history": result.history}

    return _train_tracked(context, mlflow.store(), artifacts, data, SASREC, asdict(library_config), train)


@dg.asset(deps=[USER_SEQUENCES, item_text_embeddings, item_llm_embeddings], group_name="training",
          partitions_def=dataset_partitions, pool=DUCKDB_POOL, compute_kind="pytorch")
def learn_model(
    context: dg.AssetExecutionContext, config: LEARNTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """LEARN's PAL twin tower over frozen content embeddings, dense all-action loss (epoch chosen on validation)."""
    data = _load(warehouse, context.partition_key)
    content_name = {"item_text": ITEM_TEXT, "item_llm": ITEM_LLM}[config.content]
    try:
        stored = read_embeddings(artifacts.embeddings_root(), data.dataset, content_name)
    except NoCurrentVersion as missing:
        raise dg.Failure(f"no published {content_name} embeddings for {data.dataset}: materialize them first "
                         f"({content_name} is published once every item is encoded; see its left_for_later_runs)"
                         ) from missing
    if stored.ids != data.item_ids:
        raise ValueError(f"{content_name} embeddings of {data.dataset} ({stored.path}) do not cover exactly the "
                         "interaction vocabulary; rematerialize them")
    library_config = config.learn()
    params = {**asdict(library_config), "content": content_name, "content_version": stored.path.name,
              "content_model": stored.manifest.get("model_id", "")}

    def train(on_epoch: Callable[[int, dict[str, float]], None]) -> tuple[TrainedModule, Any, dict[str, Any]]:
        result = train_learn(data, np.asarray(stored.vectors), library_config, on_epoch=on_epoch)
        return result.model, result.config, {
            "best_epoch": result.best_epoch, "best_valid": result.best_valid, "history": result.history,
            "extra": {"content": content_name, "content_version": stored.path.name},
        }

    return _train_tracked(context, mlflow.store(), artifacts, data, LEARN, params, train)
