"""The Dagster code location: assembles assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from orchestration.assets.behaviour import behaviour_embeddings
from orchestration.assets.codes import behaviour_codes, semantic_codes
from orchestration.assets.dbt import data_layer_dbt
from orchestration.assets.embeddings import item_llm_embeddings, item_text_embeddings, profile_embeddings
from orchestration.assets.evaluation import best_model_beats_popularity, model_evaluation
from orchestration.assets.ingest import ingest_raw_logs
from orchestration.assets.profiles import item_profiles, user_profiles
from orchestration.assets.publishing import published_index
from orchestration.assets.summary import data_layer_summary
from orchestration.assets.trained import TRAINING_ASSETS
from orchestration.checks import gx_interactions, gx_raw_events
from orchestration.jobs import data_layer_job, full_pipeline_job
from orchestration.resources import default_resources
from orchestration.schedules import weekly_full_retrain
from orchestration.sensors import raw_files_sensor

defs = dg.Definitions(
    assets=[
        ingest_raw_logs, data_layer_dbt, data_layer_summary,
        item_profiles, user_profiles, item_text_embeddings, profile_embeddings, item_llm_embeddings,
        behaviour_embeddings, semantic_codes, behaviour_codes,
        *TRAINING_ASSETS,
        model_evaluation, published_index,
    ],
    asset_checks=[gx_raw_events, gx_interactions, best_model_beats_popularity],
    jobs=[data_layer_job, full_pipeline_job],
    schedules=[weekly_full_retrain],
    sensors=[raw_files_sensor],
    resources=default_resources(),
    # One process per run: every step shares the DuckDB pool (limit 1), so a process per step would
    # only add start-up time (about 15 s each on the 2-core reference machine) without parallelism.
    executor=dg.in_process_executor,
)
