"""ED2 training asset: an LLM-backbone generator over the dual dynamic user and item index, tracked like every model.

ED2 reads the split's training sequences and the semantic vectors of `read_llm_semantics`: items from
the frozen LLM's `item_llm` set when it is published (complete), else the MiniLM `item_text` set;
users from `user_profile` (generated profile, else the history-mean fallback). Which set and version
it read, the generated-profile share and the user list's digest go to MLflow's params and the
checkpoint manifest; the final code tables go to the MLflow run as CSV artifacts, and the checkpoint
holds the exact tables its validation metrics were measured with.
"""

from dataclasses import asdict
from typing import Any

import dagster as dg
from pydantic import Field

from ml.data.semantic_vectors import SemanticVectors, UserSource, read_llm_semantics
from ml.data.sequences import SequenceData
from ml.data.versioned import NoCurrentVersion
from ml.models.ed2 import code_tables_csv
from ml.models.ed2_backbone import load_smollm2
from ml.models.ed2_config import ED2Config
from ml.tracking.training_runs import TrainingOutcome
from ml.train.early_stopping import EpochCallback
from ml.train.ed2_training import tiny_backbone, train_ed2
from orchestration.asset_config import asset_config
from orchestration.assets.embeddings import item_llm_embeddings, item_text_embeddings, profile_embeddings
from orchestration.assets.shared import (
    USER_SEQUENCES,
    ResumeSettings,
    checkpoint_name,
    load_split,
    train_tracked,
    training_asset,
)
from orchestration.resources import ArtifactStoreResource, MlflowResource, WarehouseResource

ED2TrainingConfig = asset_config(
    "ED2TrainingConfig", ED2Config(), asset="ed2_model", module=__name__, base=ResumeSettings,
    doc="ED2 settings: the `tiny` backbone under the quick preset's step budget.",
    extra={"user_source": (UserSource, Field(
        default="profiles", description="profiles = the user_profile embeddings (history-mean fallback where none "
        "was generated); history_mean = that fallback for every user, without the profile stage."))})


def read_semantics(artifacts: ArtifactStoreResource, data: SequenceData, user_source: UserSource) -> SemanticVectors:
    """ED2's semantic vectors; a Dagster failure saying what to materialize when a set is missing."""
    try:
        return read_llm_semantics(artifacts.embeddings_root(), data, user_source)
    except NoCurrentVersion as missing:
        raise dg.Failure(f"ED2 needs published item_text (or item_llm) and user_profile embeddings of "
                         f"{data.dataset}: materialize item_text_embeddings and profile_embeddings first") from missing


@training_asset(deps=[USER_SEQUENCES, item_text_embeddings, item_llm_embeddings, profile_embeddings])
def ed2_model(
    context: dg.AssetExecutionContext, config: ED2TrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """ED2: an LM generates the next item's index over a dual dynamic user/item index; epoch chosen on validation."""
    data = load_split(warehouse, context.partition_key)
    library_config: ED2Config = config.library_config()
    semantics = read_semantics(artifacts, data, config.user_source)
    provenance: dict[str, Any] = {"user_ids_digest": data.user_ids_digest(), **semantics.provenance}
    backbone = tiny_backbone if library_config.backbone == "tiny" else \
        (lambda cfg: load_smollm2(cfg, artifacts.model_cache_dir()))

    resume = config.resume_policy(artifacts, data.dataset, checkpoint_name(context.asset_key))

    def train(on_epoch: EpochCallback) -> TrainingOutcome:
        result = train_ed2(data, semantics.items, semantics.users, library_config, on_epoch=on_epoch,
                           backbone=backbone, resume=resume)
        return TrainingOutcome.of(result, extra=provenance,
                                  artifact_texts=code_tables_csv(result.model, data.item_ids, data.user_ids))

    return train_tracked(context, mlflow, artifacts, data, {**asdict(library_config), **provenance}, train)
