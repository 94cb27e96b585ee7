"""The default tier's smoke run: `make run` of the whole graph on a tiny dataset at the tiny preset's budgets.

The first 40 ratings of every fourth movielens-100k user (timestamps, ratings, titles) go through
every asset: ingestion, dbt, LLM profiles, embeddings, codes, every training asset, evaluation, the
blocking gate and the published index, with real make, dbt, Dagster, MLflow and faiss. It proves
the wiring of every asset; quality is the slow tier's (`test_quick_preset.py`, `test_materialize.py`).
"""

import json
from pathlib import Path

import dagster as dg

from ml.index.recommend import load_current, recommend
from ml.models.checkpoints import load_checkpoint
from orchestration.assets.trained import TRAINED_MODELS
from orchestration.definitions import defs
from tests.orchestration.make_runs import make_environment, run_make
from tests.tiny_datasets import write_registry, write_timestamped_slice

TINY = "tiny-timed"


def test_make_run_materializes_every_asset_of_the_graph_on_a_tiny_dataset(warehouse_path: Path,
                                                                           tmp_path: Path) -> None:
    registry = write_registry(tmp_path / "datasets.yaml", {TINY: write_timestamped_slice(tmp_path / "raw", TINY)})
    env = make_environment(tmp_path, registry, warehouse_path)
    out = run_make(env, "run", f"DATASET={TINY}")

    # Every asset of the job has a materialization in the run's fresh Dagster instance (only this partition ran).
    job = defs.resolve_job_def("full_pipeline_job")
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        missing = [key.to_user_string() for key in job.asset_layer.executable_asset_keys
                   if instance.get_latest_materialization_event(key) is None]
    assert not missing, f"never materialized: {missing}"

    data = tmp_path / "data"
    results = json.loads((data / "results" / TINY / "results.json").read_text())
    assert set(results["models"]) == set(TRAINED_MODELS)
    # Each checkpoint loads (its files match its manifest's checksums), all over one item vocabulary.
    vocabularies = {tuple(load_checkpoint(data / "checkpoints", TINY, name).item_ids) for name in TRAINED_MODELS}
    assert len(vocabularies) == 1

    assert f"published index: {data / 'indexes' / TINY}" in out
    index = load_current(data / "indexes", TINY)
    assert index.manifest["model_run"]["model"] == results["selection"]["model"]
    user = next(iter(index.user_rows or {}))
    picked = recommend(index, user_id=user, history=index.seen_by(user), k=5)
    assert len(picked) == 5 and not {item.item_id for item in picked} & set(index.seen_by(user))
