"""EAGER training cost by shape: milliseconds per optimizer step and per validation user, no quality.

Builds EAGER on the dataset's current code tables (the warehouse's `semantic_codes` and
`behaviour_codes`) with each run's settings laid over the preset's, then times `--steps` training
steps of the real loss on the real bucketed batches (after `--warmup` untimed ones) and one beam
search over a fixed sample of `--eval-users` validation users. The weights are untrained, so the
decoding time is a shape figure, not a converged model's (its beams spread differently). Each run is
a JSON line; the minutes per epoch are ms/step x the epoch's steps.

    python -m benchmarks.eager_step_benchmark --threads 2 --preset converged \\
        --run "shared tokens" decoder_layers=2 stt_weight=0 gct_weight=0 last_level=shared \\
        --run "per-parent tokens" decoder_layers=2 stt_weight=0 gct_weight=0 last_level=per_parent \\
        --out benchmarks/results/eager_steps.jsonl
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import duckdb
import numpy as np
import torch

from benchmarks.training_benchmark import _overrides, report_run, trained_split, warehouse_path
from ml.codes.tables import read_stream_codes
from ml.data.sequences import SequenceData
from ml.models.eager import EAGER
from ml.train.eager_training import eager_step, next_item_examples
from ml.train.sasrec_training import batches_per_epoch, bucketed_batches
from orchestration.assets.generative import STREAM_SOURCES, EAGERTrainingConfig
from orchestration.paths import data_dir
from orchestration.presets import TRAINING_PRESETS

logger = logging.getLogger("benchmarks.eager_steps")


def time_run(data: SequenceData, label: str, settings: dict[str, Any], preset: str, steps: int, warmup: int,
             eval_users: int) -> dict[str, Any]:
    """ms per training step and per validation user of one EAGER shape."""
    config = EAGERTrainingConfig(**{**TRAINING_PRESETS[preset].get("eager_model", {}), **settings}).library_config()
    with duckdb.connect(warehouse_path(), read_only=True) as con:
        streams, _ = read_stream_codes(con, data_dir() / "embeddings", data.dataset, data.item_ids,
                                       {stream: STREAM_SOURCES[stream] for stream in config.active_streams})
    torch.manual_seed(config.seed)
    model = EAGER(data.n_items, streams, config)
    histories, targets = next_item_examples(data.train, config.max_len)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    batches = bucketed_batches((histories != 0).sum(dim=1), config.batch_size, generator, config.bucket_batches)
    model.train()
    timings = []
    for index, batch in zip(range(warmup + steps), batches, strict=False):
        started = time.perf_counter()
        eager_step(model, histories[batch], targets[batch], config.batch_size, generator, optimizer)
        if index >= warmup:
            timings.append(time.perf_counter() - started)
    valid_histories, _ = data.history("valid")
    sample = np.random.default_rng(0).choice(len(valid_histories), size=min(eval_users, len(valid_histories)),
                                             replace=False)
    started = time.perf_counter()
    for start in range(0, len(sample), config.eval_batch_size):
        model.score([valid_histories[row] for row in sample[start:start + config.eval_batch_size]])
    eval_seconds = time.perf_counter() - started
    ms_per_step = 1000.0 * float(np.mean(timings))
    epoch_steps = batches_per_epoch(len(targets), config.batch_size, config.bucket_batches)
    return {"label": label, "dataset": data.dataset, "preset": preset, "overrides": settings,
            "ms_per_step": round(ms_per_step, 1), "steps_timed": len(timings), "steps_per_epoch": epoch_steps,
            "min_per_epoch": round(ms_per_step * epoch_steps / 60_000.0, 2),
            "eval_ms_per_user": round(1000.0 * eval_seconds / len(sample), 2), "eval_users": len(sample),
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--preset", default="converged", choices=sorted(TRAINING_PRESETS))
    parser.add_argument("--run", nargs="+", action="append", required=True, metavar="LABEL [KEY=VALUE]")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--eval-users", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="append one JSON line per run to this file")
    args = parser.parse_args(argv)
    data = trained_split(args.dataset, args.threads)
    for label, *pairs in args.run:
        report_run(time_run(data, label, _overrides(pairs), args.preset, args.steps, args.warmup, args.eval_users),
                   args.out, logger)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
