"""Embedding throughput: our cached encoding path against bare sentence-transformers `encode`.

On the item texts of a dataset's catalog (marts.item_catalog, built by `make run`), in one run:

* bare: `SentenceTransformer.encode` on all texts (same model, batch size and device);
* ours, first run: `ml.encoders.cache.encode_cached` into an empty cache (hashing, encoding, storing);
* ours, rerun: the same call again with nothing changed (everything read back from the cache).

Targets (issue 3): ours/bare texts/s >= 0.9, and rerun time < 5% of the first run.

    .venv/bin/python -m benchmarks.embedding_benchmark --dataset amazon-beauty
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import duckdb

from ml.data.warehouse import open_warehouse
from ml.encoders.cache import encode_cached
from ml.encoders.sentence import SentenceEncoder

logger = logging.getLogger("embedding_benchmark")


def item_texts(warehouse: Path, dataset: str, limit: int | None) -> list[str]:
    """The dataset's item texts in item-id order (at most `limit`)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select item_text from marts.item_catalog where dataset = $dataset order by item_id"
            + (f" limit {int(limit)}" if limit else ""),
            {"dataset": dataset},
        ).fetchall()
    if not rows:
        raise SystemExit(f"no item texts for {dataset!r} in {warehouse}: run `make run` first")
    return [row[0] for row in rows]


def main(argv: list[str] | None = None) -> int:
    """Run the three timings and print them with the two ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N texts")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warehouse", type=Path, default=Path(os.environ.get(
        "LLMREC_DUCKDB_PATH", Path(__file__).resolve().parent.parent / "data/warehouse/llmrec.duckdb")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    texts = item_texts(args.warehouse, args.dataset, args.limit)
    encoder = SentenceEncoder(batch_size=args.batch_size)
    encoder.encode(texts[:32])  # warm-up: first-call allocations are not throughput

    start = time.perf_counter()
    encoder.encode(texts)
    bare_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as folder:
        connect = partial(open_warehouse, Path(folder) / "cache.duckdb")
        start = time.perf_counter()
        first = encode_cached(connect, encoder, texts)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        rerun = encode_cached(connect, encoder, texts)
        rerun_s = time.perf_counter() - start
    if rerun.encoded:
        raise SystemExit(f"rerun encoded {rerun.encoded} texts; the cache should have served all of them")

    results = {
        "dataset": args.dataset, "texts": len(texts), "distinct_texts": first.encoded, "device": encoder.device,
        "batch_size": args.batch_size, "bare_s": bare_s, "ours_first_s": first_s, "ours_rerun_s": rerun_s,
        "bare_texts_per_s": len(texts) / bare_s, "ours_texts_per_s": len(texts) / first_s,
        "ratio_ours_to_bare": bare_s / first_s, "rerun_share_of_first": rerun_s / first_s,
    }
    lines = [f"{name:24s} {value:.4g}" if isinstance(value, float) else f"{name:24s} {value}"
             for name, value in results.items()]
    sys.stdout.write("\n".join(lines) + "\n" + json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
