"""The dbt data layer as Dagster assets, one dbt build per dataset partition."""


import json
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from ml.data.registry import DatasetConfig
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, DatasetRegistryResource, dbt_project


def dbt_vars(dataset: DatasetConfig) -> dict[str, Any]:
    """The dbt vars for building one dataset: its name and its registry settings."""
    settings = dataset.settings
    return {
        "dataset": dataset.name,
        "k_core": settings.k_core,
        "session_gap_minutes": settings.session_gap_minutes,
        "min_rating": settings.min_rating,
        # A log without timestamps has NULL timestamps and sessions; the not-null tests on them stand down.
        "has_timestamps": dataset.has_timestamps,
    }


def dbt_build_args(dataset: DatasetConfig) -> list[str]:
    """The dbt CLI arguments that build (models + tests) one dataset partition."""
    return ["build", "--vars", json.dumps(dbt_vars(dataset), sort_keys=True)]


class DataLayerTranslator(DagsterDbtTranslator):
    """Puts every dbt model in the `data` group; sources keep their [raw, table] keys."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        """All dbt models belong to the data layer group."""
        return "data"


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    name="data_layer_dbt",
    partitions_def=dataset_partitions,
    dagster_dbt_translator=DataLayerTranslator(),
    pool=DUCKDB_POOL,
)
def data_layer_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource, registry: DatasetRegistryResource):
    """Staging, sessions, k-core, leave-one-out split, catalog and stats for the partition's dataset."""
    dataset = registry.load().get(context.partition_key)
    yield from dbt.cli(dbt_build_args(dataset), context=context).stream()
