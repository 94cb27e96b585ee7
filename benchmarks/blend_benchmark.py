"""The blend (`ml/models/blend.py`) of trained checkpoints against its components and the fixed SASRec, on test.

Reads what the pipeline wrote (the warehouse split and the CURRENT checkpoints, e.g. after
`make run PRESET=converged`), fits the blend's weight and popularity offset on validation exactly as
the `blend_model` asset does (`ml/train/blend_selection.py`), then scores test under both protocols
with the long-tail and cold-item slices, for the blend, each component as served and the reference.
No retraining, and nothing is written to the pipeline's stores.

    .venv/bin/python -m benchmarks.blend_benchmark --sequence content_sasrec --reference sasrec
"""

import argparse
import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from benchmarks.training_benchmark import SLICES, current_checkpoint, trained_split
from ml.data.sequences import SequenceData
from ml.evaluate.ranking import evaluate_protocols
from ml.evaluate.slices import SliceConfig, item_train_counts, slice_masks, slice_metrics
from ml.models.checkpoints import TrainedModule
from ml.models.learn import LEARN
from ml.models.sasrec import SASRec
from ml.models.selection_grids import DEFAULT_BLEND_WEIGHTS, DEFAULT_POPULARITY_BETAS
from ml.train.blend_selection import BlendConfig, fit_blend

logger = logging.getLogger("benchmarks.blend")


def test_row(name: str, model: TrainedModule, data: SequenceData) -> dict[str, Any]:
    """Test metrics of `model` under both protocols, with the slices."""
    histories, targets = data.history("test")
    masks = slice_masks(histories, targets, item_train_counts(data.train, data.n_items), SliceConfig())
    cached = getattr(model, "cached_items", None)
    with cached() if cached else nullcontext():
        both = evaluate_protocols(model.score, histories, targets)
    return {"model": name, "test": both[False].metrics, "test_history_masked": both[True].metrics,
            "slices": {k: v for k, v in slice_metrics(both[False].ranks, masks).items() if k in SLICES}}


def markdown(rows: list[dict[str, Any]]) -> str:
    """One table row per model: test R@10 / N@10 ranked and removed, long-tail, cold and head R@10."""
    lines = ["| model | test R@10 / N@10 ranked | removed | long-tail R@10 | cold R@10 | head R@10 |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        t, m, sl = row["test"], row["test_history_masked"], row["slices"]
        lines.append(f"| {row['model']} | {t['recall@10']:.4f} / {t['ndcg@10']:.4f} | {m['recall@10']:.4f} / "
                     f"{m['ndcg@10']:.4f} | {sl['long_tail_items']['recall@10']:.4f} | "
                     f"{sl['cold_items'].get('recall@10', float('nan')):.4f} | {sl['head_items']['recall@10']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Fit the blend on validation, score it, its components and the reference on test; print and record."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--sequence", default="content_sasrec", help="the SASRec-family component")
    parser.add_argument("--content", default="learn", help="the LEARN component")
    parser.add_argument("--reference", default="sasrec", help="the fixed ID-only model to compare with")
    parser.add_argument("--weights", type=float, nargs="+", default=list(DEFAULT_BLEND_WEIGHTS))
    parser.add_argument("--betas", type=float, nargs="+", default=list(DEFAULT_POPULARITY_BETAS))
    parser.add_argument("--criterion", choices=["ndcg@10", "balanced"], default="ndcg@10")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line to this file")
    args = parser.parse_args(argv)
    data = trained_split(args.dataset, args.threads)
    sequence, content, reference = (current_checkpoint(data, name)
                                    for name in (args.sequence, args.content, args.reference))
    if not isinstance(sequence.model, SASRec) or not isinstance(content.model, LEARN):
        raise SystemExit(f"need a SASRec-family and a LEARN checkpoint, got {sequence.kind} and {content.kind}")
    rows = [test_row(f"{args.reference} {reference.version} (as served)", reference.model, data),
            test_row(f"{args.sequence} {sequence.version} (as served)", sequence.model, data),
            test_row(f"{args.content} {content.version}", content.model, data)]
    started = time.perf_counter()
    fitted = fit_blend(sequence.model, content.model, data,
                       BlendConfig(weights=tuple(args.weights), betas=tuple(args.betas), criterion=args.criterion))
    fit_seconds = time.perf_counter() - started
    extra = fitted.extra
    rows.append(test_row(f"blend ({args.sequence} + {args.content}, {args.criterion}), rho {extra['blend_weight']:g}, "
                         f"beta {extra['popularity_beta']:g}", fitted.model, data))
    print(f"blend fitted in {fit_seconds:.1f} s ({len(args.weights)} x {len(args.betas)} pairs); valid "
          f"{ {k: round(v, 4) for k, v in fitted.best_valid.items()} }\n\n{markdown(rows)}\n", flush=True)
    if args.out:
        with args.out.open("a") as out:
            out.write(json.dumps({"dataset": args.dataset, "components": [sequence.version, content.version],
                                  "criterion": args.criterion, "weights": args.weights, "betas": args.betas,
                                  "fit_seconds": round(fit_seconds, 1), "valid": fitted.best_valid,
                                  **{k: v for k, v in extra.items()}, "rows": rows}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
