"""Evaluation asset: every trained model through the one leave-one-out evaluator, test reported once per model.

Each model's checkpoint is the one its training asset selected on validation; its validation metrics
are the ones recorded then (scored again only under the history-removed protocol, which training does
not use), and it is scored on test, once, with the same full-ranking evaluator
(`ml/evaluate/ranking.py`: ties count against the model, history unmasked unless configured), plus
the test slices of `ml/evaluate/slices.py`. The best retrieval model on validation NDCG@10 is
registered in the MLflow model registry (`llmrec-<dataset>`; the publishing asset moves the alias
`champion` to it once the gate passed) and published as the faiss index; a generative model
(EAGER or ED2, beam search over codes, no item vectors) is evaluated and ranked like the others,
and when it is the best on validation `selection.best_overall` says so while the index serves the
best retrieval model. ED2, generative too, is scored with each user's row, since its prompt holds the
user's index. Results land in `<data>/results/<dataset>/results.json`, a recall@k plot beside it, the warehouse table
`evaluation.model_metrics` and this asset's metadata. A blocking check refuses a best model that does
not beat popularity on validation, which keeps it from being published.
"""

import json
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
from pydantic import Field

from ml.data.sequences import load_sequences
from ml.data.warehouse import replace_dataset_rows
from ml.evaluate.ranking import evaluate_model, evaluate_protocols
from ml.evaluate.report import (
    ModelReport,
    plot_recall_curves,
    png_markdown,
    protocols_table_markdown,
    results_json,
    results_table_markdown,
    select_best,
    slices_table_markdown,
    write_results_json,
)
from ml.evaluate.slices import SliceConfig, item_train_counts, slice_masks, slice_metrics
from ml.models.checkpoints import check_user_rows, load_checkpoint
from ml.models.registry import kind_of
from ml.tracking.mlflow_store import log_metrics, register_best_model
from ml.train.early_stopping import SELECTION_METRIC
from orchestration.assets.shared import checkpoint_name
from orchestration.assets.trained import TRAINED_MODELS, TRAINING_ASSETS
from orchestration.assets.training import popularity_model
from orchestration.partitions import dataset_partitions
from orchestration.resources import DUCKDB_POOL, ArtifactStoreResource, MlflowResource, WarehouseResource

POPULARITY = checkpoint_name(popularity_model.key)
RESULTS_FILE = "results.json"
CURVES_FILE = "recall_curves.png"
METRICS_TABLE = "evaluation.model_metrics"
# What a checkpoint serves beyond its weights, repeated in results.json (absent = raw scores).
SERVED_SETTINGS = ("popularity_beta", "blend_weight")


class EvaluationConfig(dg.Config):
    """Evaluation protocol settings: history masking and the slice boundaries."""

    mask_history: bool = Field(default=False, description="Exclude history items from the ranking (off in the "
                               "papers' protocol).")
    batch_size: int = Field(default=1024, description="Users scored at once (memory: batch x n_items floats).")
    head_share: float = Field(default=0.2, description="Share of items, by training count, that are 'head'.")
    cold_max_count: int = Field(default=4, description="Target items with at most this many training "
                                "interactions form the 'cold' slice.")
    short_history_max: int = Field(default=5, description="Users with at most this many history items are "
                                   "'short history'.")

    def slices(self) -> SliceConfig:
        """The slice definitions."""
        return SliceConfig(head_share=self.head_share, cold_max_count=self.cold_max_count,
                           short_history_max=self.short_history_max)


def _protocol(mask_history: bool) -> str:
    """The name of an evaluation protocol, as used in metric names."""
    return "history_masked" if mask_history else "history_unmasked"


def registered_model_name(dataset: str) -> str:
    """The MLflow registry name of a dataset's best model."""
    return f"llmrec-{dataset}"


def _metric_rows(reports: list[ModelReport]) -> pa.Table:
    """Long format: one row per model, split, slice and metric."""
    rows: dict[str, list[Any]] = {"model": [], "split": [], "slice": [], "metric": [], "value": [], "users": []}

    def add(model: str, split: str, slice_name: str, metrics: dict[str, float], users: int) -> None:
        for metric, value in metrics.items():
            if metric == "users":
                continue
            for column, cell in zip(rows, (model, split, slice_name, metric, float(value), users), strict=True):
                rows[column].append(cell)

    for report in reports:
        n_users = len(report.test_ranks)
        add(report.model, "valid", "all", report.valid, n_users)
        for slice_name, metrics in report.slices.items():
            add(report.model, "test", slice_name, metrics, int(metrics["users"]))
    return pa.table(rows)


@dg.asset(
    deps=list(TRAINING_ASSETS),
    group_name="evaluation",
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    compute_kind="pytorch",
)
def model_evaluation(
    context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Validation and test metrics (and test slices) of every model; the best on validation is registered."""
    dataset = context.partition_key
    with warehouse.connect(read_only=True) as con:
        data = load_sequences(con, dataset)
    store = mlflow.store()
    valid_histories, valid_targets = data.history("valid")
    test_histories, test_targets = data.history("test")
    masks = slice_masks(test_histories, test_targets, item_train_counts(data.train, data.n_items), config.slices())

    other_key = f"test_{_protocol(not config.mask_history)}"  # the other protocol's test metrics
    reports: list[ModelReport] = []
    retrieval_models: list[str] = []
    for name in TRAINED_MODELS:
        checkpoint = load_checkpoint(artifacts.checkpoints_root(), dataset, name)
        model = checkpoint.model
        if checkpoint.item_ids != data.item_ids:
            raise ValueError(f"checkpoint {checkpoint.path} was trained on another item vocabulary; retrain {name}")
        # LEARN (alone or in a blend) embeds the whole catalogue once per block instead of once per scored batch.
        info = checkpoint.manifest["info"]
        # A graph model scores users by their row in its training graph, ED2 by the index of that row's user
        # (the split's user order, both).
        user_rows: dict[str, np.ndarray] = {}
        kind = kind_of(model)
        if kind.scoring == "user_row":
            check_user_rows(info, data, name)
            user_rows["user_rows"] = np.arange(data.n_users)
        # A generative model beam-searches every user of a batch at once (beams x prompt caches): it scores in
        # the batches it validated with, not the evaluator's 1,024-user ones.
        batch_size = model.config.eval_batch_size if kind.evaluation == "beam_search" else config.batch_size
        with model.cached_items() if kind.caches_items else nullcontext():
            # Every training asset selected its checkpoint on exactly these validation metrics (history
            # ranked, the same evaluator, the served scores): reuse them rather than score validation again.
            if not config.mask_history and "best_valid" in info:
                valid_metrics = dict(info["best_valid"])
            else:
                valid_metrics = evaluate_model(model.score, valid_histories, valid_targets, batch_size,
                                               mask_history=config.mask_history, **user_rows).metrics
            # Test under both protocols from one scoring pass; the configured one is the headline.
            both = evaluate_protocols(model.score, test_histories, test_targets, batch_size, **user_rows)
        test, other = both[config.mask_history], both[not config.mask_history]
        slices = slice_metrics(test.ranks, masks)
        run_id = info["mlflow_run_id"]
        log_metrics(store, run_id, test.metrics, prefix="test_")
        log_metrics(store, run_id, other.metrics, prefix=f"{other_key}_")
        for slice_name, metrics in slices.items():
            log_metrics(store, run_id, metrics, prefix=f"test_{slice_name}_")
        context.log.info("%s valid %s test %s", name, {k: round(v, 4) for k, v in valid_metrics.items()},
                         {k: round(v, 4) for k, v in test.metrics.items()})
        reports.append(ModelReport(
            model=name, valid=valid_metrics, test=test.metrics, slices=slices, test_ranks=test.ranks,
            extra={"checkpoint_version": checkpoint.version, "mlflow_run_id": run_id,
                   "mlflow_model_uri": info["mlflow_model_uri"], "best_epoch": info["best_epoch"],
                   other_key: other.metrics,
                   **{setting: info[setting] for setting in SERVED_SETTINGS if setting in info}},
        ))
        if kind.retrieval:
            retrieval_models.append(name)

    best = select_best(reports, SELECTION_METRIC, candidates=retrieval_models)
    best_overall = select_best(reports, SELECTION_METRIC)
    popularity = next(report for report in reports if report.model == POPULARITY)
    registry_version = register_best_model(
        store, registered_model_name(dataset), best.extra["mlflow_model_uri"], best.extra["mlflow_run_id"],
        metrics={**{f"valid_{k}": v for k, v in best.valid.items()}, **{f"test_{k}": v for k, v in best.test.items()}},
        tags={"dataset": dataset, "model": best.model, "checkpoint_version": best.extra["checkpoint_version"],
              "dagster_run_id": context.run.run_id},
    )
    results = results_json(dataset, reports, best.model)
    results["table_markdown"] = results_table_markdown(reports)
    results["protocols_markdown"] = protocols_table_markdown(reports, _protocol(config.mask_history), other_key)
    results["selection"] = {
        "metric": f"valid_{SELECTION_METRIC}", "model": best.model, "registered_model": registered_model_name(dataset),
        "registered_version": registry_version, "popularity_valid": popularity.valid[SELECTION_METRIC],
        "mask_history": config.mask_history, "best_overall": best_overall.model,
        "note": None if best_overall is best else f"{best_overall.model} is best on validation but serves no item "
        f"vectors; the index publishes the best retrieval model, {best.model}",
    }
    folder = artifacts.results_root() / dataset
    folder.mkdir(parents=True, exist_ok=True)
    write_results_json(folder / RESULTS_FILE, results)
    plot = plot_recall_curves(reports, folder / CURVES_FILE)
    with warehouse.connect() as con:
        replace_dataset_rows(con, METRICS_TABLE, dataset, _metric_rows(reports),
                             "model varchar not null, split varchar not null, slice varchar not null, "
                             "metric varchar not null, value double not null, users integer not null")
    return dg.MaterializeResult(metadata={
        "results_table": dg.MetadataValue.md(results["table_markdown"]),
        "protocols_table": dg.MetadataValue.md(results["protocols_markdown"]),
        "slices_recall@10": dg.MetadataValue.md(slices_table_markdown(reports, "recall@10")),
        "recall_curves": dg.MetadataValue.md(png_markdown(plot, "test recall@k per model")),
        "selected_model": best.model,
        "registered_model": f"{registered_model_name(dataset)} v{registry_version}",
        **{f"{report.model}_test_{metric}": round(report.test[metric], 5)
           for report in reports for metric in ("recall@10", "ndcg@10")},
        "results_json": dg.MetadataValue.path(str(folder / RESULTS_FILE)),
    })


def read_results(artifacts: ArtifactStoreResource, dataset: str) -> dict[str, Any]:
    """The results.json the evaluation asset last wrote for `dataset`."""
    path = artifacts.results_root() / dataset / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation results for {dataset} at {path}; materialize model_evaluation")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class SelectedModel:
    """What evaluation hands to the gate and to publishing: the model selected on validation (from results.json)."""

    model: str
    checkpoint_version: str
    registered_model: str
    registered_version: str
    valid: dict[str, float]
    test: dict[str, float]
    popularity_valid: dict[str, float]

    @classmethod
    def from_results(cls, results: dict[str, Any]) -> "SelectedModel":
        """Read the selection out of a results.json document, failing with the key that is missing."""
        try:
            selection = results["selection"]
            model = selection["model"]
            entry = results["models"][model]
            return cls(model=model, checkpoint_version=entry["extra"]["checkpoint_version"],
                       registered_model=selection["registered_model"],
                       registered_version=str(selection["registered_version"]),
                       valid=dict(entry["valid"]), test=dict(entry["test"]),
                       popularity_valid=dict(results["models"][POPULARITY]["valid"]))
        except KeyError as missing:
            raise ValueError(f"results.json lacks {missing}; rematerialize model_evaluation") from missing


def read_selection(artifacts: ArtifactStoreResource, dataset: str) -> SelectedModel:
    """The model the last evaluation of `dataset` selected for publishing."""
    return SelectedModel.from_results(read_results(artifacts, dataset))


def popularity_gate(selected: SelectedModel) -> tuple[bool, float, float]:
    """(passed, the selected model's valid NDCG@10, popularity's): passed only when it strictly beats popularity."""
    model_score = float(selected.valid[SELECTION_METRIC])
    popularity_score = float(selected.popularity_valid[SELECTION_METRIC])
    return model_score > popularity_score, model_score, popularity_score


@dg.asset_check(
    asset=model_evaluation,
    name="best_model_beats_popularity",
    blocking=True,
    partitions_def=dataset_partitions,
    pool=DUCKDB_POOL,
    description="The model selected for publishing must beat the popularity baseline on validation NDCG@10.",
)
def best_model_beats_popularity(
    context: dg.AssetCheckExecutionContext, artifacts: ArtifactStoreResource
) -> dg.AssetCheckResult:
    """Compare the selected model's validation NDCG@10 with popularity's, from the results just written."""
    selection = read_selection(artifacts, context.partition_key)
    passed, model_score, popularity_score = popularity_gate(selection)
    selected = selection.model
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if passed else f"{selected} valid {SELECTION_METRIC} {model_score:.4f} does not beat "
        f"popularity's {popularity_score:.4f}: not publishing",
        metadata={"selected_model": selected, f"{selected}_valid_{SELECTION_METRIC}": model_score,
                  f"popularity_valid_{SELECTION_METRIC}": popularity_score},
    )
