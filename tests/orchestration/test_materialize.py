"""Materialize the whole graph for movielens-100k on a temporary DuckDB, twice, with the real packaged models.

The LLM budget is small (a few profiles of at most 48 tokens) and the trained models tiny (one layer,
two epochs), so the test stays within a few minutes on 2 CPU cores; everything else runs at full
scale: a real MLflow store, real checkpoints, a real faiss index, queried at the end.
"""

from contextlib import nullcontext
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
import torch
import yaml

from ml.data.embedding_store import embeddings_folder, read_embeddings
from ml.data.sequences import load_sequences
from ml.evaluate.ranking import evaluate_model
from ml.index.recommend import load_current, recommend
from ml.index.store import list_versions
from ml.models.checkpoints import history_encoder, load_checkpoint
from ml.tracking.mlflow_store import TrackingStore, find_runs
from orchestration.assets.behaviour import behaviour_embeddings
from orchestration.assets.codes import behaviour_codes, semantic_codes
from orchestration.assets.dbt import data_layer_dbt
from orchestration.assets.embeddings import item_llm_embeddings, item_text_embeddings, profile_embeddings
from orchestration.assets.evaluation import best_model_beats_popularity, model_evaluation
from orchestration.assets.ingest import ingest_raw_logs
from orchestration.assets.profiles import item_profiles, user_profiles
from orchestration.assets.publishing import published_index
from orchestration.assets.shared import TRAINING_EXPERIMENT
from orchestration.assets.summary import data_layer_summary
from orchestration.assets.trained import TRAINED_MODELS, TRAINING_ASSETS
from orchestration.checks import gx_interactions, gx_raw_events
from orchestration.cli import merge_run_config
from orchestration.paths import registry_path
from orchestration.presets import preset_run_config
from orchestration.resources import LLMResource, pipeline_resources

# The slow tier: the default tier's smoke run (test_smoke.py) proves the wiring on a tiny slice.
pytestmark = pytest.mark.slow

DATASET = "movielens-100k"
TABLES = ("raw.events", "raw.items", "marts.interactions", "marts.user_sequences", "marts.item_catalog",
          "marts.dataset_stats", "enrichment.item_profiles", "enrichment.user_profiles",
          "enrichment.semantic_codes", "enrichment.behaviour_codes", "evaluation.model_metrics")
EMBEDDINGS = ("item_text", "item_llm", "item_profile", "user_profile", "item_behaviour")
ASSETS = [ingest_raw_logs, data_layer_dbt, data_layer_summary, gx_raw_events, gx_interactions, item_profiles,
          user_profiles, item_text_embeddings, profile_embeddings, item_llm_embeddings, behaviour_embeddings,
          semantic_codes, behaviour_codes, *TRAINING_ASSETS, model_evaluation, best_model_beats_popularity,
          published_index]
RUN_CONFIG = Path(__file__).parent / "tiny_run_config.yaml"


def _materialize(warehouse: Path, artifacts: Path, budget: int) -> dg.ExecuteInProcessResult:
    """The whole graph at the tiny preset's budgets (`budget` new profiles each), every frozen-LLM text encoded."""
    config = merge_run_config(preset_run_config("tiny"), yaml.safe_load(RUN_CONFIG.read_text()))
    resources = pipeline_resources(str(warehouse), registry_path(), artifacts)
    resources["llm"] = LLMResource(**config.pop("resources")["llm"]["config"])
    for asset in ("item_profiles", "user_profiles"):
        config["ops"][asset]["config"]["max_new_profiles"] = budget
    config["ops"]["item_llm_embeddings"]["config"]["max_new_texts"] = None
    return dg.materialize(ASSETS, partition_key=DATASET, resources=resources, run_config=config)


def _snapshot(warehouse: Path, artifacts: Path) -> dict[str, object]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = {table: con.execute(f"select * exclude (dataset) from {table} order by all").fetchall()
                  for table in TABLES}
    versions = {name: embeddings_folder(artifacts / "embeddings", DATASET, name).current() for name in EMBEDDINGS}
    checkpoints = {name: load_checkpoint(artifacts / "checkpoints", DATASET, name).version
                   for name in TRAINED_MODELS}
    return {**tables, "embedding_versions": versions, "checkpoints": checkpoints}


def _metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key))
    return {name: value.value for name, value in event.materialization.metadata.items()}


def test_whole_graph_materializes_and_reruns_identically(warehouse_path: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's default store is ./mlflow.db: running elsewhere shows that nothing falls back to it.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    artifacts = tmp_path / "artifacts"
    first = _materialize(warehouse_path, artifacts, budget=4)
    assert first.success

    checks = first.get_asset_check_evaluations()
    assert checks and all(evaluation.passed for evaluation in checks)
    assert {evaluation.check_name for evaluation in checks} >= {"gx_raw_events", "gx_interactions",
                                                                "best_model_beats_popularity"}
    assert len(checks) > 20, "dbt tests should report as asset checks"

    summary = _metadata(first, "data_layer_summary")
    assert (summary["users"], summary["items"], summary["interactions"]) == (943, 1349, 99287)
    assert summary["kcore_passes"] == 2

    before = _snapshot(warehouse_path, artifacts)
    assert len(before["marts.interactions"]) == 99287

    # Profiles: the budget bounds what one run generates; coverage and a sample are metadata.
    items = _metadata(first, "item_profiles")
    assert items["entities"] == 1349 and items["generated_this_run"] == 4 and items["left_for_later_runs"] == 1345
    assert 1 <= items["dagster/row_count"] <= 4 and items["coverage"] == items["dagster/row_count"] / 1349
    assert items["model_id"].startswith("transformers:smollm2") and items["tokens_per_second"] > 0
    users = _metadata(first, "user_profiles")
    assert users["entities"] == 943 and users["generated_this_run"] == 4
    assert len(before["enrichment.item_profiles"]) == items["dagster/row_count"]

    # Embeddings: versioned Parquet with ids; the profile set marks its catalog-text fallbacks visibly.
    text = read_embeddings(artifacts / "embeddings", DATASET, "item_text")
    assert text.vectors.shape == (1349, 384) and text.ids == sorted(text.ids)
    np.testing.assert_allclose(np.linalg.norm(text.vectors, axis=1), 1.0, rtol=1e-4)
    llm = read_embeddings(artifacts / "embeddings", DATASET, "item_llm")
    assert llm.vectors.shape == (1349, 576) and llm.ids == text.ids
    np.testing.assert_allclose(np.linalg.norm(llm.vectors, axis=1), 1.0, rtol=1e-4)
    item_profile = read_embeddings(artifacts / "embeddings", DATASET, "item_profile")
    user_profile = read_embeddings(artifacts / "embeddings", DATASET, "user_profile")
    assert item_profile.columns["source"].count("profile") == items["dagster/row_count"]
    assert item_profile.columns["source"].count("catalog_text") == 1349 - items["dagster/row_count"]
    assert len(user_profile.ids) == 943 and user_profile.columns["source"].count("profile") == users["dagster/row_count"]
    profile_meta = _metadata(first, "profile_embeddings")
    assert profile_meta["items_on_catalog_text_fallback"] == 1349 - items["dagster/row_count"]
    behaviour = read_embeddings(artifacts / "embeddings", DATASET, "item_behaviour")
    assert behaviour.vectors.shape == (1349, 32) and behaviour.ids == text.ids
    assert _metadata(first, "behaviour_embeddings")["checkpoint_version"] == before["checkpoints"]["sasrec"]

    # Codes: every item a unique path, for both code tables.
    for asset in ("semantic_codes", "behaviour_codes"):
        codes = _metadata(first, asset)
        assert codes["dagster/row_count"] == 1349 and codes["items_sharing_a_code"] == 0 and codes["depth"] >= 2
        assert len({tuple(path) for _, path in before[f"enrichment.{asset}"]}) == 1349

    # Training: each model checkpointed and tracked in MLflow (params, per-epoch metrics, test metrics added
    # by the evaluation, the Dagster run id), the best on validation registered.
    store = TrackingStore(artifacts / "mlflow")
    runs = {run.data.tags["model"]: run for run in find_runs(store, TRAINING_EXPERIMENT)}
    assert set(runs) == set(TRAINED_MODELS)
    for name, run in runs.items():
        assert run.info.status == "FINISHED" and run.data.tags["dagster_run_id"] == first.run_id
        assert {"best_valid_ndcg_at_10", "test_recall_at_10", "test_cold_items_users"} <= set(run.data.metrics), name
    # The blend names the component versions it holds, and holds exactly their weights.
    blend_run = runs["blend"]
    blend_checkpoint = load_checkpoint(artifacts / "checkpoints", DATASET, "blend")
    for component, name in (("sequence", "content_sasrec"), ("content", "learn")):
        assert blend_run.data.params[f"{component}_checkpoint"] == f"{name} {before['checkpoints'][name]}"
        own = load_checkpoint(artifacts / "checkpoints", DATASET, name).model.state_dict()
        held = getattr(blend_checkpoint.model, f"{component}_model").state_dict()
        assert all(torch.equal(held[key], value) for key, value in own.items() if key != "item_bias")
    assert {"blend_weight", "popularity_beta"} <= set(blend_run.data.metrics)
    learn_run = runs["learn"]
    assert learn_run.data.params["item_tower"] == "shared" and learn_run.data.params["content"] == "item_text"
    history = store.client().get_metric_history(learn_run.info.run_id, "valid_ndcg_at_10")
    assert [metric.step for metric in history] == [1, 2]

    # Content-SASRec reads exactly the published item_text version it names (MLflow, manifest, weights).
    content_run = runs["content_sasrec"]
    assert content_run.data.params["content"] == "item_text" and content_run.data.params["fusion"] == "hybrid"
    assert content_run.data.params["content_version"] == before["embedding_versions"]["item_text"] == text.path.name
    content_checkpoint = load_checkpoint(artifacts / "checkpoints", DATASET, "content_sasrec")
    assert content_checkpoint.manifest["info"]["content_version"] == text.path.name
    np.testing.assert_array_equal(content_checkpoint.model.content[1:].numpy(), text.vectors)
    # EAGER trains on exactly the stored code tables and names the feature versions it distilled.
    eager_run = runs["eager"]
    assert eager_run.data.params["semantic_content_version"] == text.path.name
    assert eager_run.data.params["behaviour_content_version"] == behaviour.path.name
    eager_checkpoint = load_checkpoint(artifacts / "checkpoints", DATASET, "eager")
    semantic_paths = dict(before["enrichment.semantic_codes"])
    for row, item in enumerate(eager_checkpoint.item_ids[:50]):
        codes = eager_checkpoint.model.stream_codes["semantic"].codes[row]
        assert codes[codes >= 0].tolist() == list(semantic_paths[item])
    assert (artifacts / "mlflow" / "artifacts").is_dir() and not list(cwd.iterdir())
    # The graph models hold their training graph; Con and Gen name their semantic vectors and the coverage.
    for name in ("rlmrec_con", "rlmrec_gen"):
        assert runs[name].data.params["semantic_source"] == "profiles"
        assert runs[name].data.params["item_set_version"] == before["embedding_versions"]["item_profile"]
        assert runs[name].data.metrics["item_profile_coverage"] == pytest.approx(items["dagster/row_count"] / 1349)
    graph_checkpoint = load_checkpoint(artifacts / "checkpoints", DATASET, "graph_cf")
    assert graph_checkpoint.kind == "graph_cf" and graph_checkpoint.model.n_users == 943
    # ED2 names its semantic sets (item_llm is complete here) and logs the code tables it was selected with.
    ed2_run = runs["ed2"]
    assert ed2_run.data.params["item_semantic_set"] == "item_llm"
    assert ed2_run.data.params["item_set_version"] == before["embedding_versions"]["item_llm"]
    assert ed2_run.data.params["user_set_version"] == before["embedding_versions"]["user_profile"]
    ed2_checkpoint = load_checkpoint(artifacts / "checkpoints", DATASET, "ed2")
    logged = store.client().download_artifacts(ed2_run.info.run_id, "ed2_item_codes.csv", str(tmp_path))
    rows = Path(logged).read_text().splitlines()[1:]
    table = ed2_checkpoint.model.code_table("item")
    assert len(rows) == 1349 and rows[0].split(",") == [ed2_checkpoint.item_ids[0], *map(str, table.codes[0]),
                                                         str(table.suffix[0])]

    # Evaluation: every model in the table, JSON and warehouse; the selected model beats popularity.
    evaluation = _metadata(first, "model_evaluation")
    selected = evaluation["selected_model"]
    # A graph model may win here: its served scores leave out the history, which movielens never repeats.
    assert selected in {"sasrec", "content_sasrec", "learn", "blend", "graph_cf", "rlmrec_con", "rlmrec_gen"}
    assert "| popularity |" in evaluation["results_table"] and "| eager |" in evaluation["results_table"]
    assert "| ed2 |" in evaluation["results_table"]
    assert evaluation["recall_curves"].startswith("![test recall@k per model](data:image/png;base64,")
    metric_rows = before["evaluation.model_metrics"]
    assert {(model, split) for model, split, *_ in metric_rows} == {
        (model, split) for model in TRAINED_MODELS for split in ("valid", "test")}
    # Validation figures are the ones each model was selected on, and they are what its served scores give.
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        data = load_sequences(con, DATASET)
    for name in ("blend", "content_sasrec", "rlmrec_con"):
        model = load_checkpoint(artifacts / "checkpoints", DATASET, name).model
        user_rows = {"user_rows": np.arange(data.n_users)} if name == "rlmrec_con" else {}
        with model.cached_items() if name == "blend" else nullcontext():
            rescored = evaluate_model(model.score, *data.history("valid"), **user_rows).metrics
        recorded = {metric: value for model_name, split, _, metric, value, _ in metric_rows
                    if (model_name, split) == (name, "valid")}
        assert recorded == pytest.approx(rescored, abs=1e-9), name
    versions = store.client().search_model_versions(f"name = 'llmrec-{DATASET}'")
    assert len(versions) == 1 and versions[0].tags["model"] == selected
    assert float(versions[0].tags["valid_ndcg_at_10"]) > 0

    # Publishing: the current index answers for a user id and, through the model's user tower, a history.
    index = _metadata(first, "published_index")
    assert index["model"] == selected and index["dagster/row_count"] == 1349
    assert index["verification_recall@10"] == 1.0
    champion = store.client().get_model_version_by_alias(f"llmrec-{DATASET}", "champion")
    assert champion.tags["model"] == selected and index["champion"] == f"llmrec-{DATASET} v{champion.version}"
    loaded = load_current(artifacts / "indexes", DATASET)
    assert loaded.version == index["version"] and loaded.manifest["model_run"]["model"] == selected
    user = next(iter(loaded.user_rows or {}))
    assert len(recommend(loaded, user_id=user, k=10)) == 10
    checkpoint = load_checkpoint(artifacts / "checkpoints", DATASET, selected)
    if checkpoint.kind == "graph_cf":  # one vector per training user, no history encoder: the index's mean one
        with pytest.raises(ValueError, match="recommend by user id"):
            history_encoder(checkpoint)
        by_history = recommend(loaded, history=checkpoint.item_ids[:3], k=5)
    else:
        by_history = recommend(loaded, history=checkpoint.item_ids[:3], k=5,
                               history_encoder=history_encoder(checkpoint))
    assert len(by_history) == 5 and not {item.item_id for item in by_history} & set(checkpoint.item_ids[:3])

    # A rerun (no new LLM budget) recomputes nothing it has cached and leaves every output identical.
    second = _materialize(warehouse_path, artifacts, budget=0)
    assert second.success
    assert _snapshot(warehouse_path, artifacts) == before
    for asset in ("item_text_embeddings", "item_llm_embeddings"):
        assert _metadata(second, asset)["encoded"] == 0
    assert _metadata(second, "item_profiles")["reused_from_cache"] >= items["dagster/row_count"]
    # Identical weights and metrics (the snapshot above); the index is published as a new version, the
    # first one is kept for rollback.
    rerun_index = _metadata(second, "published_index")
    assert list_versions(artifacts / "indexes", DATASET) == [index["version"], rerun_index["version"]]

    # A budget smaller than what is missing encodes that much, keeps the published item_llm version, and
    # the next unbounded run completes the set (the same vectors, up to batching round-off).
    published_llm = before["embedding_versions"]["item_llm"]
    llm_model_id = _metadata(first, "item_llm_embeddings")["model_id"]
    with duckdb.connect(str(warehouse_path)) as con:
        con.execute("delete from enrichment.text_embeddings where model_id = ? and text_hash in (select text_hash "
                    "from enrichment.text_embeddings where model_id = ? order by text_hash limit 12)",
                    [llm_model_id, llm_model_id])
    resources = pipeline_resources(str(warehouse_path), registry_path(), artifacts)
    partial = dg.materialize([item_llm_embeddings], partition_key=DATASET, resources=resources, run_config={
        "ops": {"item_llm_embeddings": {"config": {"max_length": 16, "batch_size": 16, "max_new_texts": 5}}}})
    assert partial.success
    meta = _metadata(partial, "item_llm_embeddings")
    assert (meta["complete"], meta["encoded"], meta["left_for_later_runs"]) == (False, 5, 7)
    assert embeddings_folder(artifacts / "embeddings", DATASET, "item_llm").current() == published_llm
    done = dg.materialize([item_llm_embeddings], partition_key=DATASET, resources=resources, run_config={
        "ops": {"item_llm_embeddings": {"config": {"max_length": 16, "batch_size": 16, "max_new_texts": None}}}})
    meta = _metadata(done, "item_llm_embeddings")
    assert (meta["complete"], meta["encoded"], meta["left_for_later_runs"]) == (True, 7, 0)
    completed = read_embeddings(artifacts / "embeddings", DATASET, "item_llm")
    assert completed.path.name == meta["version"] and completed.ids == llm.ids
    np.testing.assert_allclose(completed.vectors, llm.vectors, atol=1e-4)
