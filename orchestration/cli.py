"""Command line: run the full graph for a dataset, backfill every dataset, query or roll back the index.

`python -m orchestration.cli run [--dataset NAME]` materializes every asset for one dataset
partition in this process (recorded in the Dagster instance at $DAGSTER_HOME, so the runs show in
the UI) and prints the results table and where the results are. `backfill` does the same for each
registered dataset. `recommend` loads the dataset's current index and prints the top-k items (with
titles) for a user id or an item history; `rollback` points the index's CURRENT at an earlier version.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ml.data.registry import load_registry
from orchestration.paths import data_dir, mlflow_dir, registry_path, warehouse_path
from orchestration.presets import PRESET_NAMES, converged_assets, preset_run_config

if TYPE_CHECKING:
    import dagster as dg

# `recommend` and `rollback` must answer in well under two seconds, so this module imports Dagster, the
# asset definitions and the models only inside the commands that use them (loading the definitions
# alone takes about ten seconds).

logger = logging.getLogger("orchestration.cli")

JOB_NAMES = ("full_pipeline_job", "data_layer_job")


def _instance() -> dg.DagsterInstance:
    """The persistent instance when DAGSTER_HOME is set (the Makefile sets it), else an ephemeral one."""
    import dagster as dg

    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


def merge_run_config(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` laid over `base`, mapping by mapping (an override's scalar or list replaces the base's)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_run_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_run_config(path: Path) -> dict[str, Any]:
    """A Dagster run config file (YAML, as the launchpad takes it), checked to be a mapping."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SystemExit(f"--config {path}: {error}") from error
    if not isinstance(document, dict):
        raise SystemExit(f"--config {path}: expected a mapping such as {{ops: {{<asset>: {{config: ...}}}}}}")
    return document


def run_partition(job_name: str, dataset: str, instance: dg.DagsterInstance, preset: str = "quick",
                  keep_quick: Sequence[str] = (), select: Sequence[str] = (),
                  overrides: dict[str, Any] | None = None) -> bool:
    """Execute a job for one dataset partition in process (training `preset`, `keep_quick` assets at the
    quick defaults, `overrides` run config laid over them, only the `select` assets when given); True when
    every step succeeded."""
    import dagster as dg

    from orchestration.definitions import defs

    job = defs.resolve_job_def(job_name)
    run_config = preset_run_config(preset, keep_quick) if job_name == "full_pipeline_job" else {}
    run_config = merge_run_config(run_config, overrides or {})
    selection = None
    if select:
        known = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
        unknown = sorted(set(select) - known)
        if unknown:
            raise SystemExit(f"--select: {unknown} are not assets of {job_name}; known: {sorted(known)}")
        selection = [dg.AssetKey.from_user_string(name) for name in select]
        # Dagster refuses config for ops outside the selection.
        run_config = {**run_config,
                      "ops": {op: config for op, config in run_config.get("ops", {}).items() if op in select}}
    tags = {"training_preset": preset, **({"quick_assets": ",".join(keep_quick)} if keep_quick else {}),
            **({"selected_assets": ",".join(select)} if select else {})}
    result = job.execute_in_process(run_config=run_config, partition_key=dataset, instance=instance,
                                    raise_on_error=False, tags=tags, asset_selection=selection)
    if not result.success:
        failed = [event.step_key for event in result.all_events if event.is_step_failure]
        logger.error("run %s for %s failed at steps %s", result.run_id, dataset, failed)
    return result.success


def print_results(dataset: str) -> None:
    """Print a dataset's results table, where its results are and its headline statistics."""
    from ml.data.versioned import NoCurrentVersion
    from ml.data.warehouse import open_warehouse
    from ml.index.store import index_folder
    from orchestration.assets.evaluation import RESULTS_FILE
    from orchestration.assets.summary import HEADLINE_COLUMNS, headline_value

    warehouse = warehouse_path()
    with open_warehouse(warehouse, read_only=True) as con:
        row = con.execute(
            f"select {', '.join(HEADLINE_COLUMNS)} from marts.dataset_stats where dataset = $dataset",
            {"dataset": dataset},
        ).fetchone()
    lines = [f"dataset {dataset}: results in the DuckDB warehouse {warehouse}",
             "  tables: raw.events, raw.items, raw.quarantine, marts.interactions, marts.user_sequences, "
             "marts.item_catalog, marts.dataset_stats, enrichment.item_profiles, enrichment.user_profiles, "
             "enrichment.semantic_codes, enrichment.behaviour_codes, evaluation.model_metrics "
             "(filter on dataset = '" + dataset + "')",
             f"  embeddings (versioned Parquet): {data_dir() / 'embeddings' / dataset}",
             f"  checkpoints: {data_dir() / 'checkpoints' / dataset}",
             f"  MLflow: mlflow ui --backend-store-uri sqlite:///{mlflow_dir() / 'mlflow.db'}"]
    if row:
        lines += [f"  {name}: {headline_value(value)}" for name, value in zip(HEADLINE_COLUMNS, row, strict=True)]
    results = data_dir() / "results" / dataset / RESULTS_FILE
    if results.is_file():
        evaluation = json.loads(results.read_text())
        lines += ["", f"results ({results}; test metrics, model selected on validation "
                      f"{evaluation['selection']['metric']}: {evaluation['selection']['model']}):",
                  evaluation["table_markdown"]]
        if evaluation["selection"].get("note"):  # a generative model was best on validation but has no item vectors
            lines += ["", evaluation["selection"]["note"]]
        if "protocols_markdown" in evaluation:  # results.json written before both protocols were scored lack it
            lines += ["", "test under both protocols (history items ranked / removed):",
                      evaluation["protocols_markdown"]]
    try:
        store = index_folder(data_dir() / "indexes", dataset)
        lines.append(f"published index: {store.path(store.current())}")
    except NoCurrentVersion:
        lines.append("published index: none")
    sys.stdout.write("\n".join(lines) + "\n")


def print_recommendations(dataset: str, user_id: str | None, history: list[str], k: int) -> None:
    """Load the dataset's current index (and its model's user tower for histories) and print the top k."""
    from ml.index.recommend import load_current, recommend

    loaded = load_current(data_dir() / "indexes", dataset)
    model_run = loaded.manifest["model_run"]
    encoder = None
    if user_id is None:
        from ml.models.checkpoints import history_encoder, load_checkpoint

        checkpoint = load_checkpoint(data_dir() / "checkpoints", dataset, model_run["model"],
                                     model_run["checkpoint_version"])
        encoder = history_encoder(checkpoint)
    # Titles travel with the index version: serving never opens the warehouse the pipeline may be writing.
    # A user's published history is left out, as the service does: what they have seen is not news to them.
    seen = loaded.seen_by(user_id) if user_id is not None else history
    picked = recommend(loaded, user_id=user_id, history=seen, k=k, history_encoder=encoder)
    query = f"user {user_id}" if user_id is not None else f"history {history}"
    lines = [f"top {k} for {query} from index {loaded.version} ({model_run['model']}):"]
    lines += [f"{rank:3d}. {item.item_id}  {item.score:.4f}  {item.title or ''}" for rank, item in
              enumerate(picked, start=1)]
    sys.stdout.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m orchestration.cli`."""
    registry = load_registry(registry_path())
    parser = argparse.ArgumentParser(prog="python -m orchestration.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="materialize the whole graph for one dataset")
    run.add_argument("--dataset", default=registry.default_dataset, choices=registry.names)
    run.add_argument("--job", default="full_pipeline_job", choices=JOB_NAMES)
    run.add_argument("--quick-assets", nargs="+", default=[], choices=converged_assets(),
                     help="training assets that keep the quick defaults under --preset (eager_model, "
                          "ed2_model: their converged presets take hours on CPU)")
    run.add_argument("--select", nargs="+", default=[], metavar="ASSET",
                     help="materialize only these assets (e.g. blend_model model_evaluation published_index "
                          "to re-blend and re-publish over the current checkpoints)")
    backfill = commands.add_parser("backfill", help="materialize the whole graph for several datasets")
    backfill.add_argument("--datasets", nargs="*", default=registry.names, choices=registry.names)
    backfill.add_argument("--job", default="full_pipeline_job", choices=JOB_NAMES)
    for command in (run, backfill):
        command.add_argument("--preset", default="quick", choices=PRESET_NAMES,
                             help="training settings: quick (the CPU defaults), converged (train until "
                                  "validation stalls) or tiny (one-layer models, the smoke run)")
        command.add_argument("--config", type=Path, default=None, metavar="YAML",
                             help="Dagster run config laid over the preset (the launchpad's format), e.g. "
                                  "{ops: {item_profiles: {config: {max_new_profiles: 64}}}}")
    rec = commands.add_parser("recommend", help="top-k items from the current index for a user or a history")
    rec.add_argument("--dataset", default=registry.default_dataset, choices=registry.names)
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user id of the dataset")
    who.add_argument("--history", nargs="+", help="item ids, oldest first")
    rec.add_argument("-k", type=int, default=10)
    back = commands.add_parser("rollback", help="point the dataset's index CURRENT at an earlier version")
    back.add_argument("--dataset", default=registry.default_dataset, choices=registry.names)
    back.add_argument("--to", default=None, help="version to restore (default: the one before CURRENT)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "recommend":
        print_recommendations(args.dataset, args.user, args.history or [], args.k)
        return 0
    if args.command == "rollback":
        from ml.index.store import rollback

        version = rollback(data_dir() / "indexes", args.dataset, args.to)
        sys.stdout.write(f"index of {args.dataset} now at {version}\n")
        return 0

    datasets = [args.dataset] if args.command == "run" else args.datasets
    instance = _instance()
    preset = args.preset
    keep_quick = getattr(args, "quick_assets", [])
    select = getattr(args, "select", [])
    overrides = load_run_config(args.config) if args.config else {}
    failed = [dataset for dataset in datasets
              if not run_partition(args.job, dataset, instance, preset, keep_quick, select, overrides)]
    for dataset in datasets:
        if dataset not in failed:
            print_results(dataset)
    if failed:
        logger.error("failed datasets: %s", failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
