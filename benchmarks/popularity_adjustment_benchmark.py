"""The popularity adjustment's frontier on trained checkpoints: every beta's validation and test figures.

Reads what the pipeline wrote (the warehouse split and the CURRENT checkpoints of the named SASRec-family
models, e.g. after `make run PRESET=converged`), applies the rule of `ml/train/popularity_adjustment.py`
on validation (the beta it would choose), then scores test for every beta of the grid under both
protocols with the long-tail and cold-item slices, so the trade-off is visible, not only the chosen
point. No retraining: the adjustment is post-hoc, so a checkpoint trained without it is scored exactly
as the same training run with it would serve. Nothing is written to the pipeline's stores.

    .venv/bin/python -m benchmarks.popularity_adjustment_benchmark --models sasrec content_sasrec
"""

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from benchmarks.training_benchmark import SLICES, current_checkpoint, trained_split
from ml.data.sequences import SequenceData
from ml.evaluate.ranking import evaluate_protocols
from ml.evaluate.slices import SliceConfig, item_train_counts, slice_masks, slice_metrics
from ml.models.sasrec import SASRec
from ml.models.selection_grids import DEFAULT_POPULARITY_BETAS
from ml.train.popularity_adjustment import PopularityChoice, choose_popularity_adjustment

logger = logging.getLogger("benchmarks.popularity_adjustment")


def frontier(model: SASRec, data: SequenceData, choice: PopularityChoice) -> list[dict[str, Any]]:
    """One record per beta the rule tried: its validation figures (from `choice`) and test under both protocols."""
    counts = item_train_counts(data.train, data.n_items)
    test_histories, test_targets = data.history("test")
    test_masks = slice_masks(test_histories, test_targets, counts, SliceConfig())
    records = []
    for beta, valid in choice.by_beta.items():
        model.set_popularity_adjustment(counts, beta)
        test = evaluate_protocols(model.score, test_histories, test_targets)
        records.append({
            "beta": beta, "valid": {k: v for k, v in valid.items() if not k.startswith("long_tail_")},
            "valid_long_tail_ndcg@10": valid.get("long_tail_ndcg@10"),
            "balanced_valid_ndcg@10": choice.balanced[beta],
            "test": test[False].metrics, "test_history_masked": test[True].metrics,
            "slices": {k: v for k, v in slice_metrics(test[False].ranks, test_masks).items() if k in SLICES},
            "slices_history_masked": {k: v for k, v in slice_metrics(test[True].ranks, test_masks).items()
                                      if k in SLICES},
        })
    model.set_popularity_adjustment(counts, choice.beta)
    return records


def table(name: str, chosen: float, records: list[dict[str, Any]]) -> str:
    """Markdown rows: beta, balanced validation NDCG@10, test ranked / removed, long-tail and cold R@10."""
    lines = [f"{name} (chosen beta {chosen:g})", "",
             "| beta | valid N@10 all / long tail / balanced | test R@10 / N@10 ranked | removed | "
             "long-tail R@10 ranked (removed) | cold R@10 ranked (removed) | head R@10 |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        mark = " (chosen)" if r["beta"] == chosen else ""
        sl, slm = r["slices"], r["slices_history_masked"]
        lines.append(
            f"| {r['beta']:g}{mark} | {r['valid']['ndcg@10']:.4f} / {r['valid_long_tail_ndcg@10']:.4f} / "
            f"{r['balanced_valid_ndcg@10']:.5f} | {r['test']['recall@10']:.4f} / {r['test']['ndcg@10']:.4f} | "
            f"{r['test_history_masked']['recall@10']:.4f} / {r['test_history_masked']['ndcg@10']:.4f} | "
            f"{sl['long_tail_items']['recall@10']:.4f} ({slm['long_tail_items']['recall@10']:.4f}) | "
            f"{sl['cold_items'].get('recall@10', float('nan')):.4f} "
            f"({slm['cold_items'].get('recall@10', float('nan')):.4f}) | {sl['head_items']['recall@10']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Score the frontier of each named checkpoint; print tables, optionally append JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--models", nargs="+", default=["sasrec", "content_sasrec"])
    parser.add_argument("--betas", type=float, nargs="+", default=list(DEFAULT_POPULARITY_BETAS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per model to this file")
    args = parser.parse_args(argv)
    data = trained_split(args.dataset, args.threads)
    for name in args.models:
        checkpoint = current_checkpoint(data, name)
        if not isinstance(checkpoint.model, SASRec):
            raise SystemExit(f"{name} is a {checkpoint.kind} checkpoint: the adjustment is for SASRec-family models")
        choice = choose_popularity_adjustment(checkpoint.model, data, args.betas)
        chosen = choice.beta
        records = frontier(checkpoint.model, data, choice)
        print(table(f"{name} {checkpoint.version} ({checkpoint.kind}, best epoch "
                    f"{checkpoint.manifest['info'].get('best_epoch')})", chosen, records) + "\n", flush=True)
        if args.out:
            with args.out.open("a") as out:
                out.write(json.dumps({"dataset": args.dataset, "model": name, "checkpoint": checkpoint.version,
                                      "chosen_beta": chosen, "frontier": records}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
