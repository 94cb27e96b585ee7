"""RLMRec on a graph backbone: base against Con and Gen, and the shuffled-profile controls, under two protocols.

Reads what the pipeline built: the split (`marts.user_sequences`) and the embedding store (the profile
embeddings and the catalog-text embeddings). Every run trains with the Dagster asset's defaults
(`GraphCFTrainingConfig`) plus the overrides given, selects its epoch on validation NDCG@10 and is
scored once on test:

- `loo`: the pipeline's leave-one-out split, the served scores (history left out) under both of the
  evaluator's protocols, as the evaluation asset reports them;
- `holdout`: RLMRec's own protocol, a seeded random 3:1:1 split of the same distinct interactions,
  Recall and NDCG at 5, 10 and 20 with the user's earlier parts removed (`ml/evaluate/holdout.py`).
  Its semantic vectors are always the catalog texts, users the mean of their holdout-train items: the
  generated user profiles read leave-one-out training items, some of which are holdout test items.

Nothing is written to the pipeline's checkpoints or MLflow; results go to stdout and, with --out,
one JSON line per run.

    .venv/bin/python -m benchmarks.rlmrec_benchmark --dataset movielens-100k --protocol loo
    .venv/bin/python -m benchmarks.rlmrec_benchmark --dataset amazon-beauty --protocol holdout \\
        --runs base con gen con-shuffled --set max_epochs=100 --out benchmarks/results/rlmrec.jsonl
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from benchmarks.training_benchmark import _overrides, report_run, trained_split
from ml.data.semantic_vectors import (
    HISTORY_MEAN_ITEMS,
    SemanticVectors,
    history_mean_vectors,
    read_semantic_vectors,
)
from ml.data.sequences import SequenceData
from ml.evaluate.holdout import HoldoutSplit, RowScoreFn, holdout_metrics, random_holdout
from ml.evaluate.ranking import evaluate_protocols
from ml.models.graph_cf import GraphCFRecommender, train_edges
from ml.train.graph_cf_training import GraphCFResult, train_graph_cf
from orchestration.assets.graph_cf import GraphCFTrainingConfig
from orchestration.paths import data_dir

logger = logging.getLogger("benchmarks.rlmrec")

# label -> (variant, overrides of the asset config)
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("base", {}),
    "con": ("con", {}),
    "gen": ("gen", {}),
    "con-shuffled": ("con", {"shuffle_profiles": True}),
    "gen-shuffled": ("gen", {"shuffle_profiles": True}),
    "con-catalog": ("con", {"semantic_source": "catalog_text"}),
    "gen-catalog": ("gen", {"semantic_source": "catalog_text"}),
    "con-catalog-shuffled": ("con", {"semantic_source": "catalog_text", "shuffle_profiles": True}),
}
HOLDOUT_SEED = 2024


def _all_pairs(data: SequenceData) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct (user row, item) interaction of the split: train, validation and test."""
    full = [np.concatenate([train, [valid, test]]) for train, valid, test in
            zip(data.train, data.valid_targets, data.test_targets, strict=True)]
    return train_edges(full)


def holdout_semantics(data: SequenceData, split: HoldoutSplit) -> SemanticVectors:
    """Catalog-text item vectors and, per user, the mean of their last holdout-train items (never a held-out one)."""
    catalog = read_semantic_vectors(data_dir() / "embeddings", data, "catalog_text")
    users = history_mean_vectors([list(items[-HISTORY_MEAN_ITEMS:] - 1) if len(items) else [] for items in split.train],
                                 catalog.items)
    return SemanticVectors(np.nan_to_num(users), catalog.items, {**catalog.provenance, "user_set_version":
                                                                 "holdout_train_mean"})


def run_loo(data: SequenceData, config: GraphCFTrainingConfig, variant: str, semantics: SemanticVectors | None
            ) -> tuple[GraphCFResult, dict[str, Any]]:
    """Train on the leave-one-out split; test metrics of the served scores under both protocols."""
    result = train_graph_cf(data.train, data.valid_targets, data.n_items, config.library_config(variant=variant),  # type: ignore[arg-type]
                            *((semantics.users, semantics.items) if semantics else (None, None)))
    histories, targets = data.history("test")
    both = evaluate_protocols(result.model.score, histories, targets, 2048, user_rows=np.arange(data.n_users))
    return result, {"test_history_ranked": both[False].metrics, "test_history_removed": both[True].metrics}


def run_holdout(data: SequenceData, split: HoldoutSplit, config: GraphCFTrainingConfig, variant: str,
                semantics: SemanticVectors | None) -> tuple[GraphCFResult, dict[str, Any]]:
    """Train on the random split's train part, select on its validation part, score its test part."""
    def rows_scorer(model: GraphCFRecommender) -> RowScoreFn:
        return lambda rows: model.backbone.score_users(model.nodes(), torch.from_numpy(rows))

    def validate(model: GraphCFRecommender) -> dict[str, float]:
        return holdout_metrics(rows_scorer(model), split.train, split.valid)

    # The leave-one-out targets are unused: `validation` replaces that protocol.
    result = train_graph_cf(split.train, data.valid_targets, data.n_items, config.library_config(variant=variant),  # type: ignore[arg-type]
                            *((semantics.users, semantics.items) if semantics else (None, None)),
                            validation=validate)
    seen = [np.concatenate([train, valid]) for train, valid in zip(split.train, split.valid, strict=True)]
    return result, {"test_holdout": holdout_metrics(rows_scorer(result.model), seen, split.test)}


def main() -> None:
    """Parse arguments, train every requested run, print and optionally append the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--protocol", choices=["loo", "holdout"], default="loo")
    parser.add_argument("--runs", nargs="+", default=["base", "con", "gen", "con-shuffled"], choices=list(RUNS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a GraphCFTrainingConfig field for every run.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="Append one JSON line per run to this file.")
    args = parser.parse_args()
    data = trained_split(args.dataset, args.threads)
    base_settings = _overrides(args.set)
    split = None
    if args.protocol == "holdout":
        users, items = _all_pairs(data)
        split = random_holdout(users, items, data.n_users, (3, 1, 1), HOLDOUT_SEED)
    for label in args.runs:
        variant, overrides = RUNS[label]
        config = GraphCFTrainingConfig(**{**base_settings, **overrides})
        semantics = None
        if variant != "base":
            semantics = holdout_semantics(data, split) if split is not None else read_semantic_vectors(
                data_dir() / "embeddings", data, config.semantic_source)
        started = time.perf_counter()
        if split is None:
            result, metrics = run_loo(data, config, variant, semantics)
        else:
            result, metrics = run_holdout(data, split, config, variant, semantics)
        record = {
            "dataset": data.dataset, "protocol": args.protocol, "run": label, "variant": variant,
            "config": asdict(result.config), "semantics": semantics.provenance if semantics else None,
            "best_epoch": result.best_epoch, "epochs_run": len(result.history), "valid": result.best_valid,
            **metrics, "seconds_per_epoch": result.extra["seconds_per_epoch"],
            "wall_seconds": time.perf_counter() - started,
        }
        report_run(record, args.out, logger)


if __name__ == "__main__":
    main()
