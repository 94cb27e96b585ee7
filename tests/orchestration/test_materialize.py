"""Materialize the whole graph for movielens-100k on a temporary DuckDB, twice, with the real packaged models.

The LLM budget is small (a few profiles of at most 48 tokens) and the behaviour model tiny, so the
test stays within a few minutes on 2 CPU cores; everything else runs at full scale.
"""

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np

from ml.data.embedding_store import embeddings_folder, read_embeddings
from orchestration.assets.behaviour import behaviour_embeddings
from orchestration.assets.codes import behaviour_codes, semantic_codes
from orchestration.assets.dbt import data_layer_dbt
from orchestration.assets.embeddings import item_llm_embeddings, item_text_embeddings, profile_embeddings
from orchestration.assets.ingest import ingest_raw_logs
from orchestration.assets.profiles import item_profiles, user_profiles
from orchestration.assets.summary import data_layer_summary
from orchestration.checks import gx_interactions, gx_raw_events
from orchestration.resources import LLMResource, pipeline_resources, registry_path

DATASET = "movielens-100k"
TABLES = ("raw.events", "raw.items", "marts.interactions", "marts.user_sequences", "marts.item_catalog",
          "marts.dataset_stats", "enrichment.item_profiles", "enrichment.user_profiles",
          "enrichment.semantic_codes", "enrichment.behaviour_codes")
EMBEDDINGS = ("item_text", "item_llm", "item_profile", "user_profile", "item_behaviour")
ASSETS = [ingest_raw_logs, data_layer_dbt, data_layer_summary, gx_raw_events, gx_interactions, item_profiles,
          user_profiles, item_text_embeddings, profile_embeddings, item_llm_embeddings, behaviour_embeddings,
          semantic_codes, behaviour_codes]


def _materialize(warehouse: Path, artifacts: Path, budget: int) -> dg.ExecuteInProcessResult:
    resources = pipeline_resources(str(warehouse), registry_path(), artifacts)
    resources["llm"] = LLMResource(max_new_tokens=48, batch_size=4)
    profiles = {"config": {"max_new_profiles": budget, "commit_every": 4}}
    return dg.materialize(
        ASSETS, partition_key=DATASET, resources=resources,
        run_config={"ops": {
            "item_profiles": profiles, "user_profiles": profiles,
            "item_llm_embeddings": {"config": {"max_length": 16, "batch_size": 16}},
            "behaviour_embeddings": {"config": {"hidden_dim": 16, "n_layers": 1, "n_heads": 1, "max_len": 20,
                                                "max_epochs": 2, "batch_size": 512}},
        }},
    )


def _snapshot(warehouse: Path, artifacts: Path) -> dict[str, object]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = {table: con.execute(f"select * exclude (dataset) from {table} order by all").fetchall()
                  for table in TABLES}
    versions = {name: embeddings_folder(artifacts / "embeddings", DATASET, name).current() for name in EMBEDDINGS}
    return {**tables, "embedding_versions": versions}


def _metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key))
    return {name: value.value for name, value in event.materialization.metadata.items()}


def test_whole_graph_materializes_and_reruns_identically(warehouse_path: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    first = _materialize(warehouse_path, artifacts, budget=4)
    assert first.success

    checks = first.get_asset_check_evaluations()
    assert checks and all(evaluation.passed for evaluation in checks)
    assert {evaluation.check_name for evaluation in checks} >= {"gx_raw_events", "gx_interactions"}
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
    assert behaviour.vectors.shape == (1349, 16) and behaviour.ids == text.ids
    assert _metadata(first, "behaviour_embeddings")["epochs_run"] == 2

    # Codes: every item a unique path, for both code tables.
    for asset in ("semantic_codes", "behaviour_codes"):
        codes = _metadata(first, asset)
        assert codes["dagster/row_count"] == 1349 and codes["items_sharing_a_code"] == 0 and codes["depth"] >= 2
        assert len({tuple(path) for _, path in before[f"enrichment.{asset}"]}) == 1349

    # A rerun (no new LLM budget) recomputes nothing it has cached and leaves every output identical.
    second = _materialize(warehouse_path, artifacts, budget=0)
    assert second.success
    assert _snapshot(warehouse_path, artifacts) == before
    for asset in ("item_text_embeddings", "item_llm_embeddings"):
        assert _metadata(second, asset)["encoded"] == 0
    assert _metadata(second, "item_profiles")["reused_from_cache"] >= items["dagster/row_count"]
