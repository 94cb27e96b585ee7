"""Blocking checks stop the run downstream: bad ingested events block dbt; a model worse than popularity is not published."""

import copy
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import torch

from ml.data.sequences import load_sequences
from ml.models.blend import BlendConfig, ScoreBlend
from ml.models.checkpoints import save_checkpoint
from ml.models.content_sasrec import ContentSASRec, ContentSASRecConfig
from ml.models.eager import EAGER, EAGERConfig, StreamCodes
from ml.models.ed2 import ED2
from ml.models.ed2_config import ED2Config
from ml.models.graph_cf import GraphCFConfig, GraphCFRecommender, LightGCN, train_edges
from ml.models.learn import LEARN, LEARNConfig
from ml.models.popularity import PopularityModel
from ml.models.residual_quantizer import resolve_collisions
from ml.models.sasrec import SASRec, SASRecConfig
from ml.tracking.mlflow_store import TrackingStore, log_model, start_training_run
from ml.train.ed2_training import tiny_backbone
from orchestration.assets.dbt import data_layer_dbt
from orchestration.assets.evaluation import best_model_beats_popularity, model_evaluation
from orchestration.assets.ingest import ingest_raw_logs
from orchestration.assets.publishing import published_index
from orchestration.checks import gx_raw_events
from orchestration.resources import pipeline_resources

# A registry whose movielens-100k entry points at a log where half the lines are unusable.
REGISTRY = """
raw_dir: .
datasets:
  movielens-100k:
    events:
      path: ratings.csv
      format: csv
      columns: {user_id: user_id, item_id: item_id, timestamp: timestamp}
    settings: {max_quarantine_rate: 0.05}
"""


def test_quarantine_rate_over_the_limit_blocks_the_dbt_build(tmp_path: Path) -> None:
    (tmp_path / "datasets.yaml").write_text(REGISTRY)
    rows = [f"u{i % 7},i{i % 11},{1_500_000_000 + i}" for i in range(100)]
    rows[::2] = ["not,a,timestamp"] * 50
    (tmp_path / "ratings.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    warehouse = tmp_path / "warehouse.duckdb"

    result = dg.materialize(
        [ingest_raw_logs, gx_raw_events, data_layer_dbt],
        partition_key="movielens-100k",
        resources=pipeline_resources(str(warehouse), tmp_path / "datasets.yaml"),
        raise_on_error=False,
    )

    assert not result.success
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "gx_raw_events"]
    assert not evaluation.passed
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert dg.AssetKey(["raw", "events"]) in materialized
    assert dg.AssetKey(["marts", "interactions"]) not in materialized
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from raw.quarantine").fetchone() == (50,)
        schemas = {row[0] for row in con.execute("select schema_name from information_schema.schemata").fetchall()}
    assert "marts" not in schemas, "dbt must not have run"


def test_a_model_worse_than_popularity_is_not_published(tmp_path: Path, warehouse_path: Path) -> None:
    """Models that score every item alike lose to popularity: the check fails and nothing is indexed."""
    (tmp_path / "datasets.yaml").write_text(REGISTRY.replace("max_quarantine_rate: 0.05", "max_quarantine_rate: 0.0"))
    rows = [f"u{user},i{(user + step) % 3 if step % 2 else 3 + (user * 7 + step) % 9},{1_500_000_000 + step}"
            for user in range(40) for step in range(8)]
    (tmp_path / "ratings.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    warehouse, artifacts = warehouse_path, tmp_path / "artifacts"  # dbt reads the warehouse path from its env var
    resources = pipeline_resources(str(warehouse), tmp_path / "datasets.yaml", artifacts)
    assert dg.materialize([ingest_raw_logs, data_layer_dbt], partition_key="movielens-100k",
                          resources=resources).success

    with duckdb.connect(str(warehouse), read_only=True) as con:
        data = load_sequences(con, "movielens-100k")
    store = TrackingStore(artifacts / "mlflow")
    torch.manual_seed(0)
    content_config = ContentSASRecConfig(hidden_dim=8, n_layers=1, n_heads=1)
    eager_config = EAGERConfig(hidden_dim=8, n_heads=1, decoder_layers=1, feedforward_dim=8, beam_size=2)
    models = {
        "content_sasrec": (ContentSASRec(np.eye(data.n_items, dtype=np.float32), content_config), content_config),
        "popularity": (PopularityModel.fit(data.train, data.n_items), None),
        "sasrec": (SASRec(data.n_items, SASRecConfig(hidden_dim=8, n_layers=1, n_heads=1)), SASRecConfig(
            hidden_dim=8, n_layers=1, n_heads=1)),
        "learn": (LEARN(np.eye(data.n_items, dtype=np.float32), LEARNConfig.cpu_default(
            hidden_dim=8, n_layers=1, n_heads=1, output_dim=4)), None),
        # Untrained: EAGER serves no item vectors, so it is evaluated but never the model the gate looks at.
        "eager": (EAGER(data.n_items, {stream: StreamCodes(
            codes=np.stack([np.arange(data.n_items) // 4, np.arange(data.n_items) % 4], axis=1),
            features=np.eye(data.n_items, dtype=np.float32), branching=max(4, data.n_items // 4 + 1))
            for stream in ("behaviour", "semantic")}, eager_config), eager_config),
    }
    # Zero item (SASRec) and output (LEARN) weights: every item ties, and ties count against the model.
    with torch.no_grad():
        models["sasrec"][0].item_embedding.weight.zero_()
        models["content_sasrec"][0].item_embedding.weight.zero_()
        models["content_sasrec"][0].content_projection.weight.zero_()
        models["learn"][0].projection.weight.zero_()
        models["learn"][0].projection.bias.zero_()
    # Graph models with all-zero embeddings tie every item too; serving raw scores, since leaving out the
    # history is already better than popularity on this 12-item catalogue.
    edges = train_edges(data.train)
    for name in ("graph_cf", "rlmrec_con", "rlmrec_gen"):
        backbone = LightGCN(data.n_users, data.n_items, dim=4, n_layers=1)
        with torch.no_grad():
            backbone.embedding.weight.zero_()
        graph_config = GraphCFConfig(dim=4, n_layers=1, exclude_history=False)
        models[name] = (GraphCFRecommender(backbone, *edges, graph_config), graph_config)
    # Untrained ED2 (generative, like EAGER): evaluated with its users' rows, never the gate's model.
    ed2_config = ED2Config(hidden_dim=8, n_layers=1, n_heads=1, intermediate_dim=8, levels=2, codebook_size=4,
                           latent_dim=4, quantizer_hidden=4, beam_size=2)
    ed2 = ED2(np.eye(data.n_items, dtype=np.float32), np.eye(data.n_users, dtype=np.float32), ed2_config,
              *tiny_backbone(ed2_config))
    for kind, count in (("item", data.n_items), ("user", data.n_users)):
        digits = np.stack([np.arange(count) // 4 % 4, np.arange(count) % 4], axis=1)
        ed2.set_codes(kind, resolve_collisions(digits, np.zeros(count), suffix_size=4))
    models["ed2"] = (ed2, ed2_config)
    # The blend of the two tied models (weight and offset zero, as a fresh blend has) ties every item too.
    models["blend"] = (ScoreBlend(copy.deepcopy(models["content_sasrec"][0]), copy.deepcopy(models["learn"][0]),
                                  BlendConfig()), BlendConfig())
    for name, (model, config) in models.items():
        run_id = start_training_run(store, "llmrec-training", name, {"model": name}, {})
        uri = log_model(store, run_id, model)
        save_checkpoint(artifacts / "checkpoints", "movielens-100k", name, model, data.item_ids,
                        config or getattr(model, "config", None),
                        {"mlflow_run_id": run_id, "mlflow_model_uri": uri, "best_epoch": 0,
                         "user_ids_digest": data.user_ids_digest()})

    result = dg.materialize(
        [model_evaluation, best_model_beats_popularity, published_index], partition_key="movielens-100k",
        resources=resources, raise_on_error=False, selection=[model_evaluation.key, published_index.key],
    )
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "best_model_beats_popularity"]
    assert not evaluation.passed and "not publishing" in (evaluation.description or "")
    published = {event.asset_key for event in result.get_asset_materialization_events()}
    assert model_evaluation.key in published and published_index.key not in published
    assert not (artifacts / "indexes").exists()
    # Registered for the record, but the blocked model never becomes the champion.
    client = store.client()
    assert len(client.search_model_versions("name = 'llmrec-movielens-100k'")) == 1
    assert not client.get_registered_model("llmrec-movielens-100k").aliases
