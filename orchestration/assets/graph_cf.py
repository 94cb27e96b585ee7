"""Graph-CF training assets: a graph backbone alone, and with RLMRec's Con and Gen profile alignment.

Each asset trains one variant (base, con, gen) of the configured backbone (LightGCN by default; SimGCL
and GCCF by config) on the train split's user-item graph, selects its epoch on validation NDCG@10
with the user's training items left out (the CF protocol; the served scores leave out the history),
and is tracked like every other model: MLflow run, self-contained checkpoint with the training
graph, evaluation by `model_evaluation` and, when best, the published index (one vector per user).
Con and Gen read the semantic vectors of `ml/data/semantic_vectors.py`: the profile embeddings by
default, whose coverage shares go to MLflow and the checkpoint, or the catalog texts for full coverage.
"""

from dataclasses import asdict
from typing import Any

import dagster as dg
from pydantic import Field

from ml.data.semantic_vectors import SemanticSource, SemanticVectors, read_semantic_vectors
from ml.data.sequences import SequenceData
from ml.data.versioned import NoCurrentVersion
from ml.models.graph_cf import GraphCFConfig, Variant
from ml.tracking.training_runs import TrainingOutcome
from ml.train.early_stopping import EpochCallback
from ml.train.graph_cf_training import train_graph_cf
from orchestration.asset_config import LibraryBackedConfig, asset_config
from orchestration.assets.embeddings import item_text_embeddings, profile_embeddings
from orchestration.assets.shared import USER_SEQUENCES, load_split, train_tracked, training_asset
from orchestration.resources import ArtifactStoreResource, MlflowResource, WarehouseResource


def _graph_config(name: str, asset: str, doc: str) -> type[LibraryBackedConfig]:
    """The config of one graph asset: the library's settings but the variant (the asset's), plus the semantics."""
    return asset_config(name, GraphCFConfig(), asset=asset, module=__name__, exclude=frozenset({"variant"}), doc=doc,
                        extra={"semantic_source": (SemanticSource, Field(
                            default="profiles", description="Con and Gen: profiles = the RLMRec profile "
                            "embeddings (catalog text / history mean where no profile was generated); catalog_text "
                            "= every item's catalog text, full coverage."))})


GraphCFTrainingConfig = _graph_config("GraphCFTrainingConfig", "graph_cf_model", "Graph-CF settings: the paper's "
                                      "d = 32, batch 4,096 and 3 layers; Adam under the quick preset's step budget.")
RLMRecConTrainingConfig = _graph_config("RLMRecConTrainingConfig", "rlmrec_con_model", "RLMRec-Con settings: the "
                                        "graph backbone's, plus the contrastive alignment's.")
RLMRecGenTrainingConfig = _graph_config("RLMRecGenTrainingConfig", "rlmrec_gen_model", "RLMRec-Gen settings: the "
                                        "graph backbone's, plus the masked reconstruction's.")


def read_semantics(artifacts: ArtifactStoreResource, data: SequenceData, source: SemanticSource) -> SemanticVectors:
    """The semantic vectors Con and Gen align with; a Dagster failure saying what to materialize when missing."""
    try:
        return read_semantic_vectors(artifacts.embeddings_root(), data, source)
    except NoCurrentVersion as missing:
        raise dg.Failure(f"no published {source} embeddings for {data.dataset}: materialize "
                         f"{'profile_embeddings' if source == 'profiles' else 'item_text_embeddings'} first"
                         ) from missing


def _train_graph_variant(
    context: dg.AssetExecutionContext, config: LibraryBackedConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource, variant: Variant,
) -> dg.MaterializeResult:
    """Train one variant, tracked; Con and Gen read their semantic vectors and record where they came from."""
    data = load_split(warehouse, context.partition_key)
    library_config: GraphCFConfig = config.library_config(variant=variant)
    semantics = None if variant == "base" else read_semantics(artifacts, data, config.semantic_source)
    # The model keeps one vector per user row: the digest lets evaluation and publishing refuse another split.
    provenance: dict[str, Any] = {"user_ids_digest": data.user_ids_digest(),
                                  **({} if semantics is None else semantics.provenance)}

    def train(on_epoch: EpochCallback) -> TrainingOutcome:
        result = train_graph_cf(data.train, data.valid_targets, data.n_items, library_config,
                                None if semantics is None else semantics.users,
                                None if semantics is None else semantics.items, on_epoch=on_epoch)
        return TrainingOutcome.of(result, extra=provenance)

    return train_tracked(context, mlflow, artifacts, data, {**asdict(library_config), **provenance}, train)


@training_asset(deps=[USER_SEQUENCES])
def graph_cf_model(
    context: dg.AssetExecutionContext, config: GraphCFTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The graph-CF backbone alone (LightGCN by default): BPR on the train split's graph, epoch chosen on validation."""
    return _train_graph_variant(context, config, warehouse, artifacts, mlflow, "base")


@training_asset(deps=[USER_SEQUENCES, profile_embeddings, item_text_embeddings])
def rlmrec_con_model(
    context: dg.AssetExecutionContext, config: RLMRecConTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """RLMRec-Con: the backbone plus contrastive alignment of its embeddings with the mapped profile vectors."""
    return _train_graph_variant(context, config, warehouse, artifacts, mlflow, "con")


@training_asset(deps=[USER_SEQUENCES, profile_embeddings, item_text_embeddings])
def rlmrec_gen_model(
    context: dg.AssetExecutionContext, config: RLMRecGenTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """RLMRec-Gen: the backbone plus masked reconstruction of the profile vectors from its propagated embeddings."""
    return _train_graph_variant(context, config, warehouse, artifacts, mlflow, "gen")
