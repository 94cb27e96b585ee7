"""Behaviour embeddings: the item table of the ID-only SASRec trained on the train split (`sasrec_model`).

EAGER's behaviour codes cluster item vectors learned from interactions only; the SASRec baseline of
the training group learns exactly that, so its selected checkpoint's item embeddings are published
here into the embedding store rather than training a second copy of the same model.
"""

import dagster as dg

from ml.data.embedding_store import write_embeddings
from ml.models.checkpoints import item_vectors, load_checkpoint
from ml.models.registry import kind_of
from orchestration.assets.shared import checkpoint_name
from orchestration.assets.training import sasrec_model
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, ArtifactStoreResource

ITEM_BEHAVIOUR = "item_behaviour"


@dg.asset(deps=[sasrec_model], group_name="enrichment", partitions_def=dataset_partitions, pool=DUCKDB_POOL,
          compute_kind="pytorch")
def behaviour_embeddings(context: dg.AssetExecutionContext, artifacts: ArtifactStoreResource) -> dg.MaterializeResult:
    """SASRec item embeddings (the checkpoint selected on validation NDCG@10), one row per item."""
    dataset = context.partition_key
    checkpoint = load_checkpoint(artifacts.checkpoints_root(), dataset, checkpoint_name(sasrec_model.key))
    if not kind_of(checkpoint.model).item_id_table:
        raise TypeError(f"{checkpoint.path} holds a {checkpoint.kind} model, which learns no item-ID table")
    vectors = item_vectors(checkpoint.model, served=False)  # the learned table, no score offset
    model_id = f"sasrec:{checkpoint.version}"
    folder = write_embeddings(artifacts.embeddings_root(), dataset, ITEM_BEHAVIOUR, checkpoint.item_ids, vectors,
                              model_id)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(checkpoint.item_ids),
        "path": dg.MetadataValue.path(str(folder)),
        "version": folder.name,
        "dim": int(vectors.shape[1]),
        "checkpoint_version": checkpoint.version,
        "best_epoch": checkpoint.manifest["info"]["best_epoch"],
    })
