"""Jobs: the data layer alone, and the full pipeline (every asset) for one dataset partition."""


import dagster as dg

from orchestration.partitions import dataset_partitions

data_layer_job = dg.define_asset_job(
    name="data_layer_job",
    selection=dg.AssetSelection.groups("data"),
    partitions_def=dataset_partitions,
    description="Ingest, dbt data layer and data checks for one dataset.",
)

full_pipeline_job = dg.define_asset_job(
    name="full_pipeline_job",
    selection=dg.AssetSelection.all(),
    partitions_def=dataset_partitions,
    description="The whole asset graph, raw logs to published artifacts, for one dataset.",
)
