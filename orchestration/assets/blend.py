"""Blend asset: the served sum of Content-SASRec's (or SASRec's) and LEARN's scores, tracked like a trained model.

It trains nothing: it reads the CURRENT checkpoints of its two components (each selected on
validation by its own asset), chooses the content weight and the popularity offset on validation
(`ml/train/blend_selection.py`) and writes a self-contained checkpoint holding both components, so
the evaluation, selection and index publishing treat it like any other retrieval model. Which
component versions it read go to MLflow's params and the checkpoint manifest.
"""

from dataclasses import asdict
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from ml.models.blend import BlendConfig
from ml.models.checkpoints import Checkpoint, load_checkpoint
from ml.models.registry import kind_of
from ml.tracking.training_runs import TrainingOutcome
from ml.train.blend_selection import fit_blend
from ml.train.early_stopping import EpochCallback
from orchestration.asset_config import asset_config
from orchestration.assets.shared import checkpoint_name, load_split, train_tracked, training_asset
from orchestration.assets.training import content_sasrec_model, learn_model, sasrec_model
from orchestration.resources import ArtifactStoreResource, MlflowResource, WarehouseResource

# Manifest facts of a component worth repeating in the blend's own (the content set and version it read).
_COMPONENT_FACTS = ("content", "content_version", "content_model", "popularity_beta", "best_epoch")


BlendTrainingConfig = asset_config(
    "BlendTrainingConfig", BlendConfig(), asset="blend_model", module=__name__,
    doc="Which sequence model LEARN is added to, and the grids its weight and popularity offset are chosen from.",
    extra={"sequence_model": (Literal["content_sasrec", "sasrec"], Field(
        default=checkpoint_name(content_sasrec_model.key),
        description="The SASRec-family component: content_sasrec (LLM-enhanced) or sasrec."))})


def _component_facts(prefix: str, checkpoint: Checkpoint) -> dict[str, Any]:
    """`<prefix>_checkpoint` (name and version) and the component's own provenance facts, prefixed."""
    info = checkpoint.manifest["info"]
    return {f"{prefix}_checkpoint": f"{checkpoint.name} {checkpoint.version}",
            **{f"{prefix}_{fact}": info[fact] for fact in _COMPONENT_FACTS if fact in info}}


@training_asset(deps=[sasrec_model, content_sasrec_model, learn_model])
def blend_model(
    context: dg.AssetExecutionContext, config: BlendTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Content-SASRec + w x LEARN - beta x log(1 + count): w and beta chosen on validation NDCG@10."""
    data = load_split(warehouse, context.partition_key)
    sequence, content = (load_checkpoint(artifacts.checkpoints_root(), data.dataset, name)
                         for name in (config.sequence_model, checkpoint_name(learn_model.key)))
    for checkpoint in (sequence, content):
        if checkpoint.item_ids != data.item_ids:
            raise dg.Failure(f"checkpoint {checkpoint.path} was trained on another item vocabulary; "
                             f"rematerialize {checkpoint.name}_model first")
    if not kind_of(sequence.model).item_id_table or content.kind != "learn":
        raise dg.Failure(f"a blend needs a SASRec-family and a LEARN checkpoint, got {sequence.kind} and "
                         f"{content.kind}")
    library_config: BlendConfig = config.library_config()
    provenance = {**_component_facts("sequence", sequence), **_component_facts("content", content)}
    context.log.info("blending %s with %s", provenance["sequence_checkpoint"], provenance["content_checkpoint"])

    def train(_: EpochCallback) -> TrainingOutcome:
        return TrainingOutcome.of(fit_blend(sequence.model, content.model, data, library_config), extra=provenance)

    return train_tracked(context, mlflow, artifacts, data, {**asdict(library_config), **provenance}, train)

