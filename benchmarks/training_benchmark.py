"""Train popularity, SASRec and LEARN on one dataset with the pipeline's defaults; print test metrics and wall times.

Reads what the pipeline already built: the split (`marts.user_sequences` in the warehouse) and the
frozen content embeddings of the embedding store (`make run` or the Dagster UI materializes them).
Every model is trained with the defaults of its Dagster training asset (`SASRecTrainingConfig`,
`LEARNTrainingConfig`), or a named preset of them (`TRAINING_PRESETS`), selected on validation
NDCG@10, and scored once on test by the same evaluator the evaluation asset uses, under both
protocols (history items ranked, as in the papers, and removed). Nothing is written to the
pipeline's checkpoints or MLflow store; the results go to stdout and, with --out, to a JSON file.

    .venv/bin/python -m benchmarks.training_benchmark --dataset amazon-beauty
    .venv/bin/python -m benchmarks.training_benchmark --preset converged --threads 1   # train until validation stalls
    .venv/bin/python -m benchmarks.training_benchmark --learn-set max_epochs=20 --learn-set hidden_dim=768 \\
        --learn-set n_layers=12 --learn-set n_heads=12     # the paper's BERT-base PAL (GPU)
"""

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import torch

from ml.data.embedding_store import read_embeddings
from ml.data.sequences import SequenceData, load_sequences
from ml.evaluate.ranking import evaluate_model, evaluate_protocols
from ml.evaluate.report import ModelReport, protocols_table_markdown, results_table_markdown
from ml.models.learn import LEARN
from ml.models.popularity import PopularityModel
from ml.train.learn_training import train_learn
from ml.train.sasrec_training import train_sasrec
from orchestration.assets.training import TRAINING_PRESETS, LEARNTrainingConfig, SASRecTrainingConfig
from orchestration.resources import WAREHOUSE_ENV, data_dir

logger = logging.getLogger("benchmarks.training")


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """key=value pairs, values parsed as JSON when they parse (numbers, booleans), else kept as strings."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def _report(name: str, model: torch.nn.Module, data: SequenceData, extra: dict[str, Any]) -> ModelReport:
    """Validation and test metrics of a trained model (test scored once)."""
    with model.cached_items() if isinstance(model, LEARN) else nullcontext():
        valid = evaluate_model(model.score, *data.history("valid"))
        test = evaluate_protocols(model.score, *data.history("test"))
    return ModelReport(model=name, valid=valid.metrics, test=test[False].metrics, slices={},
                       test_ranks=test[False].ranks, extra={**extra, "test_history_masked": test[True].metrics})


def _timed(train: Callable[[], tuple[torch.nn.Module, dict[str, Any]]]) -> tuple[torch.nn.Module, dict[str, Any]]:
    started = time.perf_counter()
    model, extra = train()
    return model, {**extra, "train_seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--models", nargs="+", default=["popularity", "sasrec", "learn"],
                        choices=["popularity", "sasrec", "learn"])
    parser.add_argument("--preset", default="quick", choices=sorted(TRAINING_PRESETS),
                        help="training preset applied before the --*-set overrides (quick = the asset defaults)")
    parser.add_argument("--sasrec-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a SASRecTrainingConfig field")
    parser.add_argument("--learn-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a LEARNTrainingConfig field (content=item_llm for the frozen LLM)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    with duckdb.connect(os.environ.get(WAREHOUSE_ENV, str(data_dir() / "warehouse" / "llmrec.duckdb")),
                        read_only=True) as con:
        data = load_sequences(con, args.dataset)
    preset = TRAINING_PRESETS[args.preset]
    sasrec_config = SASRecTrainingConfig(**{**preset.get("sasrec_model", {}), **_overrides(args.sasrec_set)})
    learn_config = LEARNTrainingConfig(**{**preset.get("learn_model", {}), **_overrides(args.learn_set)})
    reports: list[ModelReport] = []
    for name in args.models:
        if name == "popularity":
            model, extra = _timed(lambda: (PopularityModel.fit(data.train, data.n_items), {}))
        elif name == "sasrec":
            def run_sasrec() -> tuple[torch.nn.Module, dict[str, Any]]:
                result = train_sasrec(data, sasrec_config.sasrec())
                return result.model, {"best_epoch": result.best_epoch, "epochs_run": len(result.history)}
            model, extra = _timed(run_sasrec)
        else:
            stored = read_embeddings(data_dir() / "embeddings", args.dataset, learn_config.content)
            if stored.ids != data.item_ids:
                raise ValueError(f"{stored.path} does not cover the interaction vocabulary of {args.dataset}")

            content = np.asarray(stored.vectors)

            def run_learn(content: np.ndarray = content) -> tuple[torch.nn.Module, dict[str, Any]]:
                result = train_learn(data, content, learn_config.learn())
                return result.model, {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                                      "content": learn_config.content}
            model, extra = _timed(run_learn)
        started = time.perf_counter()
        report = _report(name, model, data, extra)
        report.extra["eval_seconds"] = round(time.perf_counter() - started, 1)
        reports.append(report)
        logger.info("%s: test %s (%s)", name, {k: round(v, 4) for k, v in report.test.items()}, report.extra)

    lines = [f"{args.dataset}: {data.n_users} users, {data.n_items} items; torch threads {torch.get_num_threads()}; "
             f"preset {args.preset}",
             "test, history items ranked (the papers' protocol):", results_table_markdown(reports), "",
             protocols_table_markdown(reports, "history_unmasked", "test_history_masked"), "",
             "| model | train s | eval s | best epoch | epochs run |", "|---|---|---|---|---|"]
    lines += [f"| {r.model} | {r.extra['train_seconds']} | {r.extra['eval_seconds']} | "
              f"{r.extra.get('best_epoch', '-')} | {r.extra.get('epochs_run', '-')} |" for r in reports]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.out:
        args.out.write_text(json.dumps({r.model: {"valid": r.valid, "test": r.test, **r.extra} for r in reports},
                                       indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
