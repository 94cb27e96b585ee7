"""Behaviour embeddings: item vectors learned from training interactions only, by the ID-only SASRec model."""

import dagster as dg
from dagster_dbt import get_asset_key_for_model
from pydantic import Field

from ml.data.embedding_store import write_embeddings
from ml.data.sequences import load_sequences
from ml.models.sasrec import SASRecConfig
from ml.train.sasrec_training import train_sasrec
from orchestration.assets.dbt import data_layer_dbt
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, ArtifactStoreResource, WarehouseResource

USER_SEQUENCES = get_asset_key_for_model([data_layer_dbt], "user_sequences")
ITEM_BEHAVIOUR = "item_behaviour"


class BehaviourModelConfig(dg.Config):
    """SASRec settings for the behaviour embeddings (the same model is the ID-only baseline in training)."""

    hidden_dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 256
    max_epochs: int = Field(default=20, description="Upper bound; early stopping on validation NDCG@10 ends sooner.")
    patience: int = 3
    seed: int = 0
    device: str = "auto"

    def sasrec(self) -> SASRecConfig:
        """The equivalent library config."""
        return SASRecConfig(**self.model_dump())


@dg.asset(
    deps=[USER_SEQUENCES],
    group_name="enrichment",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="pytorch",
)
def behaviour_embeddings(
    context: dg.AssetExecutionContext, config: BehaviourModelConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """SASRec item embeddings trained on the train split (selected on validation NDCG@10), one row per item."""
    dataset = context.partition_key
    with warehouse.connect(read_only=True) as con:
        data = load_sequences(con, dataset)
    result = train_sasrec(
        data, config.sasrec(),
        on_epoch=lambda epoch, record: context.log.info("epoch %d %s", epoch,
                                                        {k: round(v, 4) for k, v in record.items()}),
    )
    model_id = f"sasrec:d{config.hidden_dim}:l{config.n_layers}:seed{config.seed}:epoch{result.best_epoch}"
    folder = write_embeddings(artifacts.embeddings_root(), dataset, ITEM_BEHAVIOUR, data.item_ids,
                              result.item_embeddings(), model_id)
    epochs = ["| epoch | loss | valid recall@10 | valid ndcg@10 | seconds |", "|---|---|---|---|---|"]
    epochs += [
        f"| {int(r['epoch'])} | {r['loss']:.4f} | {r.get('valid_recall@10', float('nan')):.4f} | "
        f"{r.get('valid_ndcg@10', float('nan')):.4f} | {r['seconds']:.1f} |"
        for r in result.history
    ]
    return dg.MaterializeResult(metadata={
        "dagster/row_count": data.n_items,
        "path": dg.MetadataValue.path(str(folder)),
        "version": folder.name,
        "dim": config.hidden_dim,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        **{f"valid_{name}": round(value, 5) for name, value in result.best_valid.items()},
        "training_curve": dg.MetadataValue.md("\n".join(epochs)),
    })
