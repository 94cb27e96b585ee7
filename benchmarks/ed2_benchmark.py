"""ED2 against its own controls: dynamic vs static index, with vs without the regulators and the user task, M = 2, 3, 4.

Reads what the pipeline built: the split (`marts.user_sequences`) and the embedding store (item_llm
when published, else item_text; user_profile, or the history mean with `--set user_source=history_mean`).
Every run trains with the Dagster asset's defaults (`ED2TrainingConfig`, the quick CPU preset) plus
the overrides given, selects its epoch on validation NDCG@10 and is scored once on test under both of
the evaluator's protocols (history ranked, history removed). It also times one user's ranking (the
beam search, prompt included) on a fixed sample of 100 test users. Nothing is written to the
pipeline's checkpoints or MLflow; results go to stdout and, with --out, one JSON line per run.

    .venv/bin/python -m benchmarks.ed2_benchmark --dataset movielens-100k --runs dynamic static
    .venv/bin/python -m benchmarks.ed2_benchmark --dataset amazon-beauty --runs dynamic no-regulator \\
        --set max_steps=2000 --out benchmarks/results/ed2.jsonl
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.training_benchmark import _overrides, report_run, resume_policy, single_user_latency, trained_split
from ml.data.semantic_vectors import read_llm_semantics
from ml.evaluate.ranking import evaluate_protocols
from ml.train.ed2_training import train_ed2
from orchestration.assets.ed2 import ED2TrainingConfig
from orchestration.paths import data_dir

logger = logging.getLogger("benchmarks.ed2")

# label -> overrides of the asset config (the defaults are the dynamic index, both regulators, the user task, M = 4)
RUNS: dict[str, dict[str, Any]] = {
    "dynamic": {},
    "static": {"index": "static"},
    "latent-pull": {"latent_pull": 0.1},
    "no-regulator": {"index_regulator_weight": 0.0, "token_regulator_weight": 0.0},
    "no-index-regulator": {"index_regulator_weight": 0.0},
    "no-token-regulator": {"token_regulator_weight": 0.0},
    "no-user-task": {"user_task_ratio": 0.0},
    "user-task-0.1": {"user_task_ratio": 0.1},
    "m2": {"levels": 2},
    "m3": {"levels": 3},
}


def main() -> None:
    """Parse arguments, train every requested run, print and optionally append the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--runs", nargs="+", default=["dynamic", "static"], choices=list(RUNS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Override an ED2TrainingConfig field for every run.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--resume-dir", type=Path, default=None,
                        help="save each run's whole training state here and continue a killed run from it")
    parser.add_argument("--checkpoint-every-minutes", type=float, default=10.0)
    parser.add_argument("--out", default=None, help="Append one JSON line per run to this file.")
    args = parser.parse_args()
    data = trained_split(args.dataset, args.threads)
    base_settings = _overrides(args.set)
    histories, targets = data.history("test")
    for label in args.runs:
        config = ED2TrainingConfig(**{**base_settings, **RUNS[label]})
        semantics = read_llm_semantics(data_dir() / "embeddings", data, config.user_source)
        started = time.perf_counter()
        resume = resume_policy(args.resume_dir, data.dataset, f"ed2-{label}", args.checkpoint_every_minutes)
        result = train_ed2(data, semantics.items, semantics.users, config.library_config(), resume=resume)
        wall = time.perf_counter() - started
        both = evaluate_protocols(result.model.score, histories, targets, config.eval_batch_size,
                                  user_rows=np.arange(data.n_users))
        history = result.history
        record = {
            "dataset": data.dataset, "run": label, "config": asdict(result.config), "semantics": semantics.provenance,
            "best_epoch": result.best_epoch, "epochs_run": len(history), "valid": result.best_valid,
            "test_history_ranked": both[False].metrics, "test_history_removed": both[True].metrics,
            "steps": sum(record.get("steps", 0.0) for record in history),
            "train_seconds": round(sum(record["seconds"] for record in history), 1),
            "eval_seconds": round(sum(record.get("eval_seconds", 0.0) for record in history), 1),
            "seconds_per_step": round(sum(r["seconds"] for r in history) / max(1.0, sum(r["steps"] for r in history)),
                                      3),
            "valid_curve": [{"steps": int(sum(r["steps"] for r in history[:place + 1])),
                             "recall@10": round(r["valid_recall@10"], 5), "ndcg@10": round(r["valid_ndcg@10"], 5)}
                            for place, r in enumerate(history) if "valid_ndcg@10" in r],
            "index": {key: value for key, value in result.extra.items()},
            "codes_changed": [{key: value for key, value in record.items() if key.endswith(("changed", "moved",
                                                                                         "collided"))}
                              for record in history],
            **single_user_latency(result.model.score, histories, users=100, pass_rows=True),
            "wall_seconds": round(wall, 1),
        }
        report_run(record, args.out, logger)


if __name__ == "__main__":
    main()
