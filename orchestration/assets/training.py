"""Training assets: popularity, SASRec (ID-only baseline), Content-SASRec and LEARN, each tracked in MLflow.

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
from pydantic import Field

from ml.data.sequences import SequenceData
from ml.evaluate.ranking import evaluate_model
from ml.models.content_sasrec import ContentSASRecConfig
from ml.models.learn import LEARNConfig
from ml.models.popularity import PopularityModel
from ml.models.sasrec import SASRecConfig
from ml.tracking.training_runs import TrainingOutcome
from ml.train.content_sasrec_training import train_content_sasrec
from ml.train.early_stopping import EpochCallback
from ml.train.learn_training import train_learn
from ml.train.sasrec_training import train_sasrec
from orchestration.asset_config import asset_config
from orchestration.assets.embeddings import (
    ITEM_LLM,
    ITEM_PROFILE,
    ITEM_TEXT,
    item_llm_embeddings,
    item_text_embeddings,
    profile_embeddings,
)
from orchestration.assets.shared import (
    USER_SEQUENCES,
    ResumeSettings,
    checkpoint_name,
    load_split,
    read_content,
    train_tracked,
    training_asset,
)
from orchestration.resources import ArtifactStoreResource, MlflowResource, WarehouseResource

ContentSource = Literal["item_text", "item_llm", "item_profile"]
CONTENT_SETS: dict[str, str] = {"item_text": ITEM_TEXT, "item_llm": ITEM_LLM, "item_profile": ITEM_PROFILE}


SASRecTrainingConfig = asset_config(
    "SASRecTrainingConfig", SASRecConfig(), asset="sasrec_model", module=__name__, base=ResumeSettings,
    doc="SASRec settings (the ID-only baseline; its item table also feeds the behaviour codes): the library's "
        "defaults under the quick preset's step budget.")
ContentSASRecTrainingConfig = asset_config(
    "ContentSASRecTrainingConfig", ContentSASRecConfig(), asset="content_sasrec_model", module=__name__,
    base=ResumeSettings,
    doc="Content-SASRec settings: SASRec's, plus the content set and how it enters the item table.",
    extra={"content": (ContentSource, Field(
        default="item_text", description="Frozen content: item_text (MiniLM over the catalog text), item_llm "
        "(frozen LLM, CEX) or item_profile (MiniLM over the RLMRec item profiles, catalog text where none)."))})
# content_dim is read from the content set itself.
LEARNTrainingConfig = asset_config(
    "LEARNTrainingConfig", LEARNConfig.cpu_default(), asset="learn_model", module=__name__,
    exclude=frozenset({"content_dim"}),
    doc="LEARN settings: the CPU shape (`LEARNConfig.cpu_default`; the paper's is 768 x 12 layers).",
    extra={"content": (Literal["item_text", "item_llm"], Field(
        default="item_text", description="Frozen content embeddings: item_text (MiniLM sentence encoder) or "
        "item_llm (frozen LLM, CEX)."))})


@training_asset(deps=[USER_SEQUENCES], compute_kind="numpy")
def popularity_model(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, artifacts: ArtifactStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The popularity baseline: items ranked by training interaction count, scored on validation."""
    data = load_split(warehouse, context.partition_key)

    def train(_: EpochCallback) -> TrainingOutcome:
        model = PopularityModel.fit(data.train, data.n_items)
        return TrainingOutcome(model, None, 0, evaluate_model(model.score, *data.history("valid")).metrics)

    return train_tracked(context, mlflow, artifacts, data, {"model": "popularity"}, train)


@training_asset(deps=[USER_SEQUENCES])
def sasrec_model(
    context: dg.AssetExecutionContext, config: SASRecTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """SASRec, ID-only with full softmax cross-entropy, trained on the train split (epoch chosen on validation)."""
    data = load_split(warehouse, context.partition_key)
    library_config: SASRecConfig = config.library_config()

    resume = config.resume_policy(artifacts, data.dataset, checkpoint_name(context.asset_key))

    def train(on_epoch: EpochCallback) -> TrainingOutcome:
        return TrainingOutcome.of(train_sasrec(data, library_config, on_epoch=on_epoch, resume=resume))

    return train_tracked(context, mlflow, artifacts, data, asdict(library_config), train)


def _train_on_content(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, artifacts: ArtifactStoreResource,
    mlflow: MlflowResource, content_key: str, library_config: Any,
    fit: Callable[[SequenceData, np.ndarray, Any, EpochCallback], Any],
) -> dg.MaterializeResult:
    """Train a model that reads a published content set: `fit(data, vectors, config, on_epoch)`, tracked.

    The set's name, version and encoder go to MLflow's params and the checkpoint manifest, so a run
    names exactly the embedding version it read.
    """
    data = load_split(warehouse, context.partition_key)
    stored = read_content(artifacts, data, CONTENT_SETS[content_key])
    content = stored.provenance()

    def train(on_epoch: EpochCallback) -> TrainingOutcome:
        return TrainingOutcome.of(fit(data, np.asarray(stored.vectors), library_config, on_epoch), extra=content)

    return train_tracked(context, mlflow, artifacts, data, {**asdict(library_config), **content}, train)


@training_asset(deps=[USER_SEQUENCES, item_text_embeddings, item_llm_embeddings])
def learn_model(
    context: dg.AssetExecutionContext, config: LEARNTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """LEARN's PAL twin tower over frozen content embeddings, dense all-action loss (epoch chosen on validation)."""
    return _train_on_content(context, warehouse, artifacts, mlflow, config.content, config.library_config(),
                             lambda data, vectors, cfg, on_epoch: train_learn(data, vectors, cfg, on_epoch=on_epoch))


@training_asset(deps=[USER_SEQUENCES, item_text_embeddings, item_llm_embeddings, profile_embeddings])
def content_sasrec_model(
    context: dg.AssetExecutionContext, config: ContentSASRecTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Content-SASRec: SASRec over an item table fused with frozen LLM-derived content (epoch chosen on validation)."""
    return _train_on_content(
        context, warehouse, artifacts, mlflow, config.content, config.library_config(),
        lambda data, vectors, cfg, on_epoch: train_content_sasrec(
            data, vectors, cfg, on_epoch=on_epoch,
            resume=config.resume_policy(artifacts, data.dataset, checkpoint_name(context.asset_key))))
