"""The code location loads, with the assets, groups, checks, pools and jobs the UI should show."""

import dagster as dg
import pytest

from orchestration.definitions import defs
from orchestration.presets import TRAINING_PRESETS, preset_run_config
from orchestration.resources import DUCKDB_POOL, LLMResource


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


def test_assets_are_in_their_groups_with_lineage() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"raw/events", "raw/items", "raw/quarantine", "staging/stg_events", "intermediate/int_sessions",
            "intermediate/int_kcore_interactions", "marts/interactions", "marts/user_sequences",
            "marts/item_catalog", "marts/dataset_stats", "data_layer_summary"} <= keys
    enrichment = {dg.AssetKey(name) for name in (
        "item_profiles", "user_profiles", "item_text_embeddings", "profile_embeddings", "item_llm_embeddings",
        "behaviour_embeddings", "semantic_codes", "behaviour_codes")}
    later_groups = {"popularity_model": "training", "sasrec_model": "training", "content_sasrec_model": "training",
                    "learn_model": "training", "eager_model": "training", "blend_model": "training",
                    "graph_cf_model": "training", "rlmrec_con_model": "training", "rlmrec_gen_model": "training",
                    "ed2_model": "training", "model_evaluation": "evaluation", "published_index": "publishing"}
    assert enrichment <= graph.get_all_asset_keys()
    for key in graph.get_all_asset_keys():
        expected = later_groups.get(key.to_user_string(), "enrichment" if key in enrichment else "data")
        assert graph.get(key).group_name == expected, key
    parents = {key.to_user_string(): {parent.to_user_string() for parent in graph.get(key).parent_keys}
               for key in enrichment}
    assert parents == {
        "item_profiles": {"marts/item_catalog", "marts/interactions"},
        "user_profiles": {"item_profiles"},
        "item_text_embeddings": {"marts/item_catalog"},
        "profile_embeddings": {"item_profiles", "user_profiles"},
        "item_llm_embeddings": {"marts/item_catalog"},
        "behaviour_embeddings": {"sasrec_model"},
        "semantic_codes": {"item_text_embeddings"},
        "behaviour_codes": {"behaviour_embeddings"},
    }
    later = {name: {parent.to_user_string() for parent in graph.get(dg.AssetKey(name)).parent_keys}
             for name in later_groups}
    assert later == {
        "popularity_model": {"marts/user_sequences"},
        "sasrec_model": {"marts/user_sequences"},
        "content_sasrec_model": {"marts/user_sequences", "item_text_embeddings", "item_llm_embeddings",
                                 "profile_embeddings"},
        "learn_model": {"marts/user_sequences", "item_text_embeddings", "item_llm_embeddings"},
        "eager_model": {"marts/user_sequences", "semantic_codes", "behaviour_codes"},
        "blend_model": {"sasrec_model", "content_sasrec_model", "learn_model"},
        "graph_cf_model": {"marts/user_sequences"},
        "rlmrec_con_model": {"marts/user_sequences", "profile_embeddings", "item_text_embeddings"},
        "rlmrec_gen_model": {"marts/user_sequences", "profile_embeddings", "item_text_embeddings"},
        "ed2_model": {"marts/user_sequences", "item_text_embeddings", "item_llm_embeddings", "profile_embeddings"},
        "model_evaluation": {"popularity_model", "sasrec_model", "content_sasrec_model", "learn_model",
                             "eager_model", "blend_model", "graph_cf_model", "rlmrec_con_model",
                             "rlmrec_gen_model", "ed2_model"},
        "published_index": {"model_evaluation"},
    }
    # Lineage: raw events -> staging -> ... -> stats -> summary.
    assert dg.AssetKey(["raw", "events"]) in graph.get(dg.AssetKey(["staging", "stg_events"])).parent_keys
    assert dg.AssetKey(["marts", "dataset_stats"]) in graph.get(dg.AssetKey("data_layer_summary")).parent_keys


def test_every_asset_is_partitioned_by_dataset() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        partitions = graph.get(key).partitions_def
        assert partitions is not None and partitions.get_partition_keys() == ["amazon-beauty", "movielens-100k"]


def test_everything_that_opens_duckdb_shares_one_pool() -> None:
    for assets_def in defs.assets or []:
        assert {node.pool for node in assets_def.node_def.iterate_op_defs()} == {DUCKDB_POOL}, assets_def
    for check_def in defs.asset_checks or []:
        assert check_def.node_def.pool == DUCKDB_POOL


def test_dbt_tests_and_gx_suites_are_asset_checks_and_gx_blocks() -> None:
    graph = defs.resolve_asset_graph()
    check_keys = graph.asset_check_keys
    names = {key.name for key in check_keys}
    assert {"gx_raw_events", "gx_interactions"} <= names
    assert any(name.startswith("unique_") for name in names) and any(name.startswith("not_null_") for name in names)
    blocking = {spec.name for check_def in defs.asset_checks or [] for spec in check_def.check_specs
                if spec.blocking}
    assert blocking == {"gx_raw_events", "gx_interactions", "best_model_beats_popularity"}


def test_jobs_schedule_and_sensor_are_registered() -> None:
    assert defs.resolve_job_def("full_pipeline_job") is not None
    assert defs.resolve_job_def("data_layer_job") is not None
    assert defs.resolve_schedule_def("weekly_full_retrain").cron_schedule == "0 3 * * 1"
    assert defs.resolve_sensor_def("raw_files_sensor") is not None


def test_llm_backend_and_budget_are_launchpad_settings() -> None:
    llm = defs.resources["llm"]
    assert (llm.backend, llm.model, llm.temperature) == ("transformers", "smollm2-135m-instruct", 0.0)
    item_profiles_op = defs.resolve_assets_def("item_profiles").node_def
    fields = item_profiles_op.config_schema.config_type.fields
    assert {"max_new_profiles", "commit_every"} <= set(fields)


def test_the_llm_key_variable_is_restricted_to_the_project_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """A launchpad run config cannot point api_key_env at any other variable (its value would be sent to base_url)."""
    monkeypatch.setenv("SOME_CLOUD_SECRET", "s3cr3t-value")

    @dg.asset
    def key_variable(llm: LLMResource) -> str:
        return llm.api_key_env

    def launch(variable: str) -> dg.ExecuteInProcessResult:
        return dg.materialize([key_variable], resources={"llm": LLMResource()}, raise_on_error=False,
                              run_config={"resources": {"llm": {"config": {"api_key_env": variable}}}})

    refused = launch("SOME_CLOUD_SECRET")
    assert not refused.success
    [failure] = [event for event in refused.all_events if event.is_failure]
    message = str(failure.event_specific_data.error.to_string())
    assert "LLMREC_" in message and "s3cr3t-value" not in message
    accepted = launch("LLMREC_OTHER_KEY")
    assert accepted.success and accepted.output_for_node("key_variable") == "LLMREC_OTHER_KEY"


@pytest.mark.parametrize("preset", sorted(TRAINING_PRESETS))
def test_every_training_preset_is_a_valid_run_config_of_the_full_job(preset: str) -> None:
    """A preset key that no asset config has (a typo, a renamed field) fails here, not in a user's weekly run."""
    job = defs.resolve_job_def("full_pipeline_job")
    dg.validate_run_config(job, preset_run_config(preset))
    with pytest.raises(dg.DagsterInvalidConfigError, match="no_such_field"):
        dg.validate_run_config(job, {"ops": {"ed2_model": {"config": {"no_such_field": 1}}}})
