"""movielens-100k with the quick preset's defaults: the best model beats popularity on validation and test.

`make run DATASET=movielens-100k` trains exactly these defaults. With 943 users an epoch is 4 optimizer
steps, so a fixed epoch count left every model below popularity; the step budgets must train a
small dataset as well as a large one. Only the assets the models need are materialized (no LLM
profiles: Content-SASRec and LEARN read the MiniLM item text embeddings by default; EAGER reads the
semantic codes of those and the behaviour codes of SASRec's item table; RLMRec's Con and Gen read
the catalog-text vectors, the configuration with full item coverage; ED2 reads the item text vectors
and, per user, the history-mean fallback the profile stage would give).
"""

import json
from pathlib import Path

import dagster as dg
import pytest

from orchestration.assets.behaviour import behaviour_embeddings
from orchestration.assets.blend import blend_model
from orchestration.assets.codes import behaviour_codes, semantic_codes
from orchestration.assets.dbt import data_layer_dbt
from orchestration.assets.ed2 import ed2_model
from orchestration.assets.embeddings import item_text_embeddings
from orchestration.assets.evaluation import RESULTS_FILE, best_model_beats_popularity, model_evaluation
from orchestration.assets.generative import eager_model
from orchestration.assets.graph_cf import graph_cf_model, rlmrec_con_model, rlmrec_gen_model
from orchestration.assets.ingest import ingest_raw_logs
from orchestration.assets.training import content_sasrec_model, learn_model, popularity_model, sasrec_model
from orchestration.paths import registry_path
from orchestration.presets import preset_run_config
from orchestration.resources import pipeline_resources

pytestmark = pytest.mark.slow

DATASET = "movielens-100k"


def _quick_with_catalog_text() -> dict:
    """The quick preset, with Con, Gen and ED2 on the catalog-text vectors (no LLM profiles needed)."""
    config = preset_run_config("quick")
    for asset in ("rlmrec_con_model", "rlmrec_gen_model"):
        config["ops"][asset] = {"config": {"semantic_source": "catalog_text"}}
    config["ops"]["ed2_model"] = {"config": {"user_source": "history_mean"}}
    return config


def test_quick_preset_beats_popularity_on_movielens(warehouse_path: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    result = dg.materialize(
        [ingest_raw_logs, data_layer_dbt, item_text_embeddings, popularity_model, sasrec_model, content_sasrec_model,
         learn_model, behaviour_embeddings, semantic_codes, behaviour_codes, eager_model, blend_model,
         graph_cf_model, rlmrec_con_model, rlmrec_gen_model, ed2_model, model_evaluation,
         best_model_beats_popularity],
        partition_key=DATASET, resources=pipeline_resources(str(warehouse_path), registry_path(), artifacts),
        run_config=_quick_with_catalog_text(), raise_on_error=False,
    )
    assert result.success
    [gate] = [e for e in result.get_asset_check_evaluations() if e.check_name == "best_model_beats_popularity"]
    assert gate.passed, gate.description

    results = json.loads((artifacts / "results" / DATASET / RESULTS_FILE).read_text())
    selected = results["selection"]["model"]
    models = results["models"]
    assert selected != "popularity"
    # The published model, the generative ones, the blend and the graph models.
    for model in (selected, "eager", "blend", "graph_cf", "rlmrec_con", "rlmrec_gen", "ed2"):
        for split in ("valid", "test"):
            for metric in ("recall@10", "ndcg@10"):
                assert models[model][split][metric] > models["popularity"][split][metric], (model, split, metric)
