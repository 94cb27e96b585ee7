"""EAGER decoding on validation: merge rule x beam width, quality against single-user latency.

Loads the dataset's CURRENT `eager` checkpoint (trained by the `eager_model` asset or `make run`) and,
for each merge rule (`confidence`: the beams merged by each item's own path log-probability;
`rerank`: their union re-scored by the sum of both streams' log-probabilities, the authors') and each
beam width, scores the validation split (full ranking, ties against the model) and times one user's
ranking (p50 / p99 over a fixed sample of 200 users). `--users N` scores a fixed random sample of N
validation users instead of all (the same sample for every setting: the comparison is paired). The
pick is the best validation NDCG@10 whose p99 latency is within `--latency-bound-ms`. Test is never
read here.

    python -m benchmarks.eager_decoding_benchmark --dataset amazon-beauty --beams 20 50 100 \\
        --threads 2 --out benchmarks/results/eager_decoding.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from typing import Any

import numpy as np

from benchmarks.training_benchmark import current_checkpoint, report_run, single_user_latency, trained_split
from ml.evaluate.ranking import DEFAULT_KS, evaluate_model
from ml.models.eager import EAGER, MergeRule

logger = logging.getLogger("benchmarks.eager_decoding")
MERGES: tuple[MergeRule, ...] = ("confidence", "rerank")


def validation_users(data: Any, users: int | None) -> tuple[list[np.ndarray], np.ndarray]:
    """The validation histories and targets, or a fixed random sample of `users` of them (seed 0)."""
    histories, targets = data.history("valid")
    if users is None or users >= len(targets):
        return list(histories), np.asarray(targets)
    rows = np.sort(np.random.default_rng(0).choice(len(targets), size=users, replace=False))
    return [histories[row] for row in rows], np.asarray(targets)[rows]


def measure(model: EAGER, histories: list[np.ndarray], targets: np.ndarray, merge: MergeRule, beam: int,
            eval_batch_size: int) -> dict[str, Any]:
    """Validation metrics (over `histories`) and single-user latency of one merge rule and beam width."""
    model.config = dataclasses.replace(model.config, merge=merge, beam_size=beam)
    started = time.perf_counter()
    valid = evaluate_model(model.score, histories, targets, eval_batch_size, DEFAULT_KS).metrics
    seconds = time.perf_counter() - started
    return {"merge": merge, "beam_size": beam, "valid": valid, "valid_users": len(targets),
            "valid_seconds": round(seconds, 1),
            **single_user_latency(model.score, histories)}


def pick(records: list[dict[str, Any]], latency_bound_ms: float, tolerance: float = 0.0) -> dict[str, Any] | None:
    """Among the records whose p99 latency is within the bound, the fastest (p99) whose validation NDCG@10 is
    within `tolerance` of the best: a costlier setting must win by more than the noise to be picked."""
    within = [record for record in records if record["latency_ms_p99"] <= latency_bound_ms]
    if not within:
        return None
    best = max(record["valid"]["ndcg@10"] for record in within)
    close = [record for record in within if record["valid"]["ndcg@10"] >= best - tolerance]
    return min(close, key=lambda record: record["latency_ms_p99"])


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure every merge rule and beam width, print the table and the pick."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--beams", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--merges", nargs="+", default=list(MERGES), choices=MERGES)
    parser.add_argument("--latency-bound-ms", type=float, default=250.0,
                        help="p99 single-user latency a default may have (2 cores; default 250 ms)")
    parser.add_argument("--tolerance", type=float, default=0.0005,
                        help="validation NDCG@10 within which the faster setting is picked (default 0.0005, about "
                             "a quarter of the standard error of Beauty's validation NDCG@10 over 8,000 users)")
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--users", type=int, default=None,
                        help="a fixed random sample of this many validation users (default: all); the same for "
                             "every setting, so the comparison is paired")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="append one JSON line per setting to this file")
    args = parser.parse_args(argv)
    data = trained_split(args.dataset, args.threads)
    checkpoint = current_checkpoint(data, "eager")
    model = checkpoint.model.eval()
    histories, targets = validation_users(data, args.users)
    records = []
    for merge in args.merges:
        for beam in args.beams:
            record = {"dataset": data.dataset, "checkpoint": checkpoint.version,
                      **measure(model, histories, targets, merge, beam, args.eval_batch_size)}
            report_run(record, args.out, logger)
            records.append(record)
    lines = ["| merge | beam | valid R@10 | valid N@10 | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['merge']} | {r['beam_size']} | {r['valid']['recall@10']:.4f} | {r['valid']['ndcg@10']:.4f} | "
              f"{r['latency_ms_p50']} | {r['latency_ms_p99']} |" for r in records]
    best = pick(records, args.latency_bound_ms, args.tolerance)
    lines.append(f"pick (the fastest within {args.tolerance:g} of the best valid NDCG@10, p99 <= "
                 f"{args.latency_bound_ms:g} ms): "
                 + (json.dumps({"merge": best["merge"], "beam_size": best["beam_size"]}) if best else "none"))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
