"""Dagster orchestration of the pipeline: thin assets over ml/, data_quality/ and the dbt project."""
