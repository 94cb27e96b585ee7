"""RLMRec profile assets: LLM-written item profiles, then user profiles built on them, per dataset partition.

Each asset builds every entity's prompt from training data, generates the profiles its cache does
not hold yet (at most `max_new_profiles` this run, most popular items first), and publishes the
profiles valid for the current prompts and model as its table. Entities still without a profile
are counted in the coverage metadata; downstream embeddings fall back to their catalog text.
A user prompt includes the profiles of the user's sampled items, so when new item profiles land,
the affected user prompts change and those users are regenerated (their old profiles stay cached).
"""

import logging
from typing import Literal

import dagster as dg
import duckdb
import pyarrow as pa
from dagster_dbt import get_asset_key_for_model
from pydantic import Field

from ml.data.warehouse import replace_dataset_rows
from ml.profiles.cache import ProfileKey, current_profiles
from ml.profiles.generate import GenerationStats, generate_profiles
from ml.profiles.inputs import load_profile_inputs
from ml.profiles.prompts import (
    ChatPrompt,
    build_item_prompt,
    build_user_prompt,
    has_item_evidence,
    has_user_evidence,
)
from orchestration.assets.dbt import data_layer_dbt
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, ArtifactStoreResource, LLMResource, WarehouseResource

ITEM_CATALOG = get_asset_key_for_model([data_layer_dbt], "item_catalog")
INTERACTIONS = get_asset_key_for_model([data_layer_dbt], "interactions")

ITEM_PROFILES_TABLE = "enrichment.item_profiles"
USER_PROFILES_TABLE = "enrichment.user_profiles"
PROFILE_COLUMNS_DDL = "entity_id varchar not null, summarization varchar not null, prompt_hash varchar not null, " \
    "model_id varchar not null"


class ProfileGenerationConfig(dg.Config):
    """Per-run generation settings (launchpad-editable); the LLM itself is the `llm` resource."""

    max_new_profiles: int | None = Field(
        default=16, description="Budget: at most this many new generations per run (None = no limit). "
        "The cache keeps everything, so repeated runs extend coverage. 16 is one LLM batch: about 1 min for items "
        "and 1.5 min for users on 2 CPU cores, which keeps a cold `make run` near 20 minutes.",
    )
    commit_every: int = Field(
        default=16, description="Profiles per committed batch (what a killed run keeps). Each batch is one call to "
        "the backend, so keep it at least the llm resource's batch_size or the LLM runs smaller batches.",
    )
    max_reviews: int = Field(default=5, description="Training reviews sampled into an item prompt.")
    max_items: int = Field(default=10, description="Training items sampled into a user prompt.")
    seed: int = 0


def _publish_profiles(
    con: duckdb.DuckDBPyConnection, kind: Literal["item", "user"], dataset: str, model_id: str,
    prompts: dict[str, ChatPrompt],
) -> dict[str, str]:
    """Write the profiles matching the current prompts and model as the asset's table; return them."""
    keys = [ProfileKey(entity, prompt.prompt_hash) for entity, prompt in prompts.items()]
    profiles = current_profiles(con, dataset, kind, model_id, keys)
    table = ITEM_PROFILES_TABLE if kind == "item" else USER_PROFILES_TABLE
    entities = sorted(profiles)
    replace_dataset_rows(con, table, dataset, pa.table({
        "entity_id": entities,
        "summarization": [profiles[entity] for entity in entities],
        "prompt_hash": [prompts[entity].prompt_hash for entity in entities],
        "model_id": [model_id] * len(entities),
    }), PROFILE_COLUMNS_DDL)
    return profiles


def published_summaries(con: duckdb.DuckDBPyConnection, kind: Literal["item", "user"], dataset: str) -> dict[str, str]:
    """Entity id -> profile summary, as the item_profiles or user_profiles asset last published them."""
    table = ITEM_PROFILES_TABLE if kind == "item" else USER_PROFILES_TABLE
    return dict(con.execute(
        f"select entity_id, summarization from {table} where dataset = $dataset", {"dataset": dataset}
    ).fetchall())


def _generate_and_publish(
    warehouse: WarehouseResource, kind: Literal["item", "user"], dataset: str, prompts: dict[str, ChatPrompt],
    config: ProfileGenerationConfig, llm: LLMResource, artifacts: ArtifactStoreResource, log: logging.Logger,
    entities: int,
) -> dict[str, object]:
    """Generate what the cache lacks within the budget, publish the current profiles, return the asset metadata.

    `entities` counts every item or user, the ones skipped for want of evidence (no prompt) included.
    """
    with llm.open_backend(artifacts.model_cache_dir()) as backend:
        # The warehouse is opened per batch, not held through generation (minutes to hours).
        stats = generate_profiles(warehouse.connect, backend, dataset, kind, prompts, config.max_new_profiles,
                                  config.commit_every)
        model_id = backend.model_id
    with warehouse.connect() as con:
        profiles = _publish_profiles(con, kind, dataset, model_id, prompts)
    log.info("%s profiles for %s: %d/%d (%s)", kind, dataset, len(profiles), len(prompts), stats)
    return _profile_metadata(stats, profiles, prompts, model_id, entities)


def _profile_metadata(
    stats: GenerationStats, profiles: dict[str, str], prompts: dict[str, ChatPrompt], model_id: str, entities: int
) -> dict[str, object]:
    """Counts, coverage, throughput and one sample (prompt and profile) for the UI."""
    sample = next((entity for entity in prompts if entity in profiles), None)
    sample_md = (
        f"**{sample}**\n\nPrompt:\n```\n{prompts[sample].user[:1500]}\n```\n\nProfile: {profiles[sample]}"
        if sample else "no profile yet"
    )
    return {
        "dagster/row_count": len(profiles),
        "entities": entities,
        "prompted_entities": len(prompts),
        "coverage": len(profiles) / entities if entities else 0.0,
        "model_id": model_id,
        "generated_this_run": stats.generated,
        "succeeded_this_run": stats.succeeded,
        "failed_this_run": stats.failed,
        "reused_from_cache": stats.cached,
        "left_for_later_runs": stats.left_for_later,
        "profiles_per_minute": round(stats.profiles_per_minute, 2),
        "tokens_per_second": round(stats.tokens_per_second, 2),
        "sample_profile": dg.MetadataValue.md(sample_md),
    }


@dg.asset(
    deps=[ITEM_CATALOG, INTERACTIONS],
    group_name="enrichment",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="llm",
)
def item_profiles(
    context: dg.AssetExecutionContext, config: ProfileGenerationConfig, warehouse: WarehouseResource, llm: LLMResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """RLMRec item profiles: title, description, attributes and sampled training reviews, summarized by the LLM."""
    dataset = context.partition_key
    with warehouse.connect(read_only=True) as con:
        inputs = load_profile_inputs(con, dataset)
    ranked = inputs.items_by_popularity()
    prompts = {
        item: build_item_prompt(inputs.items[item], inputs.train_by_item.get(item, []), config.max_reviews,
                                config.seed)
        for item in ranked if has_item_evidence(inputs.items[item], inputs.train_by_item.get(item, []))
    }
    skipped = len(ranked) - len(prompts)
    if skipped:
        context.log.info("%d of %d items have no text and no reviews: no profile (catalog-text fallback)",
                         skipped, len(ranked))
    metadata = _generate_and_publish(warehouse, "item", dataset, prompts, config, llm, artifacts, context.log,
                                     entities=len(ranked))
    metadata["skipped_without_text_or_reviews"] = skipped
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    deps=[item_profiles],
    group_name="enrichment",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="llm",
)
def user_profiles(
    context: dg.AssetExecutionContext, config: ProfileGenerationConfig, warehouse: WarehouseResource, llm: LLMResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """RLMRec user profiles: a sample of each user's training items, with their item profiles, summarized."""
    dataset = context.partition_key
    with warehouse.connect(read_only=True) as con:
        inputs = load_profile_inputs(con, dataset)
        item_summaries = published_summaries(con, "item", dataset)
    prompts = {
        user: build_user_prompt(user, rows, inputs.items, item_summaries, config.max_items, config.seed)
        for user, rows in sorted(inputs.train_by_user.items())
        if has_user_evidence(rows, inputs.items, item_summaries)
    }
    skipped = len(inputs.train_by_user) - len(prompts)
    if skipped:
        context.log.info("%d of %d users' items have no text, profile or review: no profile (history-mean "
                         "fallback)", skipped, len(inputs.train_by_user))
    metadata = _generate_and_publish(warehouse, "user", dataset, prompts, config, llm, artifacts, context.log,
                                     entities=len(inputs.train_by_user))
    metadata["item_profiles_available"] = len(item_summaries)
    metadata["skipped_without_text_profiles_or_reviews"] = skipped
    return dg.MaterializeResult(metadata=metadata)
