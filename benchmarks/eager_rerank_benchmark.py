"""EAGER as a second stage: the served model's top N re-scored by EAGER's path log-likelihood, against both alone.

Reads what the pipeline wrote (the warehouse split and the CURRENT checkpoints of the first stage,
by default the published blend, and of EAGER, e.g. after `make run PRESET=converged`), fits the
rerank's weight on validation exactly as `ml/train/rerank_selection.py` does, then scores test once
under both protocols with the long-tail, cold and head slices: the first stage as served, EAGER
alone and the rerank; and times one user's ranking (p50 / p99) for each. No retraining, and nothing
is written to the pipeline's stores.

    .venv/bin/python -m benchmarks.eager_rerank_benchmark --threads 2 --out benchmarks/results/eager_rerank.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path

from benchmarks.blend_benchmark import markdown, test_row
from benchmarks.training_benchmark import current_checkpoint, single_user_latency, trained_split
from ml.models.eager import EAGER
from ml.models.generative_rerank import DEFAULT_RERANK_WEIGHTS, RerankConfig
from ml.train.rerank_selection import fit_rerank

logger = logging.getLogger("benchmarks.eager_rerank")


def main(argv: list[str] | None = None) -> int:
    """Fit the rerank on validation; score the first stage, EAGER and the rerank on test; print and record."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--first-stage", default="blend", help="the model whose top candidates EAGER re-scores")
    parser.add_argument("--candidates", type=int, default=RerankConfig().candidates)
    parser.add_argument("--weights", type=float, nargs="+", default=list(DEFAULT_RERANK_WEIGHTS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line to this file")
    args = parser.parse_args(argv)
    data = trained_split(args.dataset, args.threads)
    first, eager = current_checkpoint(data, args.first_stage), current_checkpoint(data, "eager")
    if not isinstance(eager.model, EAGER):
        raise SystemExit(f"the eager checkpoint holds a {eager.kind}")
    cached = getattr(first.model, "cached_items", None)
    with cached() if cached else nullcontext():
        histories, targets = data.history("valid")
        started = time.perf_counter()
        fit = fit_rerank(first.model, eager.model, histories, targets,
                         RerankConfig(candidates=args.candidates, weights=tuple(args.weights)))
        fit_seconds = time.perf_counter() - started
        test_histories = list(data.history("test")[0])
        rows = []
        for name, model in ((f"{args.first_stage} {first.version} (as served)", first.model),
                            (f"eager {eager.version}", eager.model),
                            (f"{args.first_stage} + eager rerank of the top {args.candidates}, rho {fit.rho:g}",
                             fit.model)):
            rows.append({**test_row(name, model, data), **single_user_latency(model.score, test_histories)})
    print(f"rerank fitted in {fit_seconds:.1f} s; valid {({k: round(v, 4) for k, v in fit.best_valid.items()})}; "
          f"{fit.summary()}\n\n{markdown(rows)}\n", flush=True)
    if args.out:
        with args.out.open("a") as out:
            out.write(json.dumps({"dataset": args.dataset, "first_stage": [args.first_stage, first.version],
                                  "eager": eager.version, "fit_seconds": round(fit_seconds, 1),
                                  "valid": fit.best_valid, **fit.summary(), "rows": rows}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
