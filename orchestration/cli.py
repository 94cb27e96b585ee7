"""Command line for the main job: run the full graph for a dataset, or backfill every dataset.

`python -m orchestration.cli run [--dataset NAME]` materializes every asset for one dataset
partition in this process (recorded in the Dagster instance at $DAGSTER_HOME, so the runs show in
the UI) and prints where the results are. `backfill` does the same for each registered dataset.
"""

import argparse
import logging
import os
import sys

import dagster as dg
import duckdb

from ml.data.registry import load_registry
from orchestration.assets.summary import HEADLINE_COLUMNS
from orchestration.definitions import defs
from orchestration.resources import WAREHOUSE_ENV, data_dir, registry_path

logger = logging.getLogger("orchestration.cli")

JOB_NAMES = ("full_pipeline_job", "data_layer_job")


def _instance() -> dg.DagsterInstance:
    """The persistent instance when DAGSTER_HOME is set (the Makefile sets it), else an ephemeral one."""
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


def run_partition(job_name: str, dataset: str, instance: dg.DagsterInstance) -> bool:
    """Execute a job for one dataset partition in process; True when every step succeeded."""
    job = defs.resolve_job_def(job_name)
    result = job.execute_in_process(partition_key=dataset, instance=instance, raise_on_error=False)
    if not result.success:
        failed = [event.step_key for event in result.all_events if event.is_step_failure]
        logger.error("run %s for %s failed at steps %s", result.run_id, dataset, failed)
    return result.success


def print_results(dataset: str) -> None:
    """Print where a dataset's results are and its headline statistics."""
    warehouse = os.environ[WAREHOUSE_ENV]
    with duckdb.connect(warehouse, read_only=True) as con:
        row = con.execute(
            f"select {', '.join(HEADLINE_COLUMNS)} from marts.dataset_stats where dataset = $dataset",
            {"dataset": dataset},
        ).fetchone()
    lines = [f"dataset {dataset}: results in the DuckDB warehouse {warehouse}",
             "  tables: raw.events, raw.items, raw.quarantine, marts.interactions, marts.user_sequences, "
             "marts.item_catalog, marts.dataset_stats, enrichment.item_profiles, enrichment.user_profiles, "
             "enrichment.semantic_codes, enrichment.behaviour_codes (filter on dataset = '" + dataset + "')",
             f"  embeddings (versioned Parquet): {data_dir() / 'embeddings' / dataset}"]
    if row:
        lines += [f"  {name}: {value}" for name, value in zip(HEADLINE_COLUMNS, row, strict=True)]
    sys.stdout.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m orchestration.cli`."""
    registry = load_registry(registry_path())
    parser = argparse.ArgumentParser(prog="python -m orchestration.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="materialize the whole graph for one dataset")
    run.add_argument("--dataset", default=registry.default_dataset, choices=registry.names)
    run.add_argument("--job", default="full_pipeline_job", choices=JOB_NAMES)
    backfill = commands.add_parser("backfill", help="materialize the whole graph for several datasets")
    backfill.add_argument("--datasets", nargs="*", default=registry.names, choices=registry.names)
    backfill.add_argument("--job", default="full_pipeline_job", choices=JOB_NAMES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    datasets = [args.dataset] if args.command == "run" else args.datasets
    instance = _instance()
    failed = [dataset for dataset in datasets if not run_partition(args.job, dataset, instance)]
    for dataset in datasets:
        if dataset not in failed:
            print_results(dataset)
    if failed:
        logger.error("failed datasets: %s", failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
