"""Generative training asset: EAGER over the behaviour and semantic codes, tracked like every other model.

EAGER reads the two code tables of the enrichment group and the two embedding sets they were built
from (its summary tokens distil them): `item_behaviour` (the SASRec item table) for the behaviour
stream and `item_text` (MiniLM) for the semantic one. The embedding versions and code depths go to
MLflow's params and the checkpoint manifest, and the checkpoint stores the exact code tables.
"""

from dataclasses import asdict

import dagster as dg

from ml.codes.tables import read_stream_codes
from ml.data.versioned import NoCurrentVersion
from ml.models.eager import EAGERConfig
from ml.tracking.training_runs import TrainingOutcome
from ml.train.eager_training import train_eager
from ml.train.early_stopping import EpochCallback
from orchestration.asset_config import asset_config
from orchestration.assets.behaviour import ITEM_BEHAVIOUR
from orchestration.assets.codes import behaviour_codes, semantic_codes
from orchestration.assets.embeddings import ITEM_TEXT
from orchestration.assets.shared import (
    USER_SEQUENCES,
    ResumeSettings,
    checkpoint_name,
    load_split,
    train_tracked,
    training_asset,
)
from orchestration.resources import ArtifactStoreResource, MlflowResource, WarehouseResource

# stream -> (code table, embedding set of its global features)
STREAM_SOURCES: dict[str, tuple[str, str]] = {
    "behaviour": ("enrichment.behaviour_codes", ITEM_BEHAVIOUR),
    "semantic": ("enrichment.semantic_codes", ITEM_TEXT),
}


EAGERTrainingConfig = asset_config(
    "EAGERTrainingConfig", EAGERConfig(), asset="eager_model", module=__name__, base=ResumeSettings,
    doc="EAGER settings: the paper's shape (hidden 128, 1 encoder layer, lambda_1 = lambda_2 = 1) under the quick "
        "preset's budget (2 decoder layers, beam 10 per stream).")


@training_asset(deps=[USER_SEQUENCES, semantic_codes, behaviour_codes])
def eager_model(
    context: dg.AssetExecutionContext, config: EAGERTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """EAGER: two-stream generation of behaviour and semantic codes, beam-search ranking chosen on validation."""
    data = load_split(warehouse, context.partition_key)
    library_config: EAGERConfig = config.library_config()
    sources = {stream: STREAM_SOURCES[stream] for stream in library_config.active_streams}
    try:
        with warehouse.connect(read_only=True) as con:
            streams, provenance = read_stream_codes(con, artifacts.embeddings_root(), data.dataset, data.item_ids,
                                                    sources)
    except NoCurrentVersion as missing:
        raise dg.Failure(f"EAGER needs the published item_behaviour and item_text embeddings of {data.dataset}: "
                         "materialize behaviour_embeddings and item_text_embeddings first") from missing

    def train(on_epoch: EpochCallback) -> TrainingOutcome:
        resume = config.resume_policy(artifacts, data.dataset, checkpoint_name(context.asset_key))
        return TrainingOutcome.of(train_eager(data, streams, library_config, on_epoch=on_epoch, resume=resume),
                                  extra=provenance)

    return train_tracked(context, mlflow, artifacts, data, {**asdict(library_config), **provenance}, train)
