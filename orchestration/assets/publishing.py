"""Publishing asset: the selected model's item vectors as a verified, versioned faiss index.

Runs only when the evaluation's blocking check passed (the model beats popularity on validation); only
then, once the index is verified and current, does the registered version become the MLflow `champion`.
The index holds the model's inference item vectors; user vectors are each user's query vector after
their whole known history (train + validation + test items), which is what serving would use, or,
for a graph-CF model, the user's vector in its training graph.
`ml/index/publish.py` writes the version aside, verifies checksums and recall@10 against exact search,
then switches `CURRENT`; earlier versions stay for rollback (`python -m orchestration.cli rollback`).
"""

from typing import Literal

import dagster as dg
import numpy as np
from pydantic import Field

from ml.data.sequences import load_sequences
from ml.index.build import IndexConfig
from ml.index.publish import publish_index
from ml.models.checkpoints import (
    check_user_rows,
    has_score_offset,
    item_vectors,
    load_checkpoint,
    supports_retrieval,
    user_vectors,
)
from ml.models.registry import kind_of
from ml.tracking.mlflow_store import promote_champion
from orchestration.assets.evaluation import model_evaluation, read_selection
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, ArtifactStoreResource, MlflowResource, WarehouseResource


class IndexPublishConfig(dg.Config):
    """Which faiss index to build (exact inner product suits catalogues of this size) and how to verify it."""

    kind: Literal["flat_ip", "hnsw", "ivf_pq"] = Field(default="flat_ip", description="flat_ip: exact; hnsw or "
                                                       "ivf_pq (re-ranked exactly) for large catalogues.")
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    ivf_nlist: int | None = Field(default=None, description="IVF lists; None = about 4 x sqrt(items).")
    ivf_nprobe: int = 16
    ivf_pq_m: int = 8
    min_recall: float = Field(default=0.9, description="recall@10 floor against exact search (approximate kinds).")
    verify_users: int = Field(default=500, description="Users sampled for the recall@10-vs-exact verification.")
    seed: int = 0

    def index(self) -> IndexConfig:
        """The library index config."""
        return IndexConfig(**self.model_dump(exclude={"verify_users"}))


@dg.asset(
    deps=[model_evaluation],
    group_name="publishing",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="faiss",
)
def published_index(
    context: dg.AssetExecutionContext, config: IndexPublishConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """A new verified index version of the selected model's item vectors, made current; its model made champion."""
    dataset = context.partition_key
    selection = read_selection(artifacts, dataset)
    checkpoint = load_checkpoint(artifacts.checkpoints_root(), dataset, selection.model, selection.checkpoint_version)
    model = checkpoint.model
    if not supports_retrieval(model):
        raise ValueError(f"{checkpoint.name} has no item vectors to index")
    with warehouse.connect(read_only=True) as con:
        data = load_sequences(con, dataset)
        titles = dict(con.execute("select item_id, coalesce(title, item_text) from marts.item_catalog "
                                  "where dataset = $dataset", {"dataset": dataset}).fetchall())
    test_histories, test_targets = data.history("test")
    full_histories = [np.append(history, target) for history, target in zip(test_histories, test_targets,
                                                                              strict=True)]
    # A graph model has one vector per training-graph user row (the split's user order), not a history encoder.
    user_rows = None
    if kind_of(model).scoring == "user_row":
        check_user_rows(checkpoint.manifest["info"], data, checkpoint.name)
        user_rows = np.arange(data.n_users)
    published = publish_index(
        artifacts.indexes_root(), dataset, checkpoint.item_ids, item_vectors(model), data.user_ids,
        user_vectors(model, full_histories, user_rows=user_rows),
        metadata={
            "model": checkpoint.name, "checkpoint_version": checkpoint.version,
            "mlflow_run_id": checkpoint.manifest["info"]["mlflow_run_id"],
            "registered_model": selection.registered_model, "registered_version": selection.registered_version,
            "dagster_run_id": context.run.run_id,
            "metrics": {**{f"valid_{metric}": value for metric, value in selection.valid.items()},
                        **{f"test_{metric}": value for metric, value in selection.test.items()}},
        },
        config=config.index(), verify_users=config.verify_users,
        item_titles=[titles.get(item) for item in checkpoint.item_ids],
        # What serving leaves out as seen and shows as a user's history: the same items the user vector read.
        user_histories=[[data.item_ids[row - 1] for row in history] for history in full_histories],
        score_offset_column=has_score_offset(model),
    )
    # The alias follows what serves: never a version the popularity gate blocked or a failed publish.
    promote_champion(mlflow.store(), selection.registered_model, selection.registered_version)
    report = published.report
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(published.path)),
        "version": published.version,
        "model": checkpoint.name,
        "index_kind": config.kind,
        "dagster/row_count": len(checkpoint.item_ids),
        "dim": int(published.manifest["dim"]),
        "verification_recall@10": round(report.recall, 4),
        "verification_queries": report.queries,
        "users_indexed": len(data.user_ids),
        "champion": f"{selection.registered_model} v{selection.registered_version}",
    })
