"""Bounded load on the recommendation service over loopback: p50 / p99 latency and throughput per endpoint.

Starts `python -m serving` on a free loopback port over the data folder's published indexes (the
same process `make serve` runs), then for each endpoint keeps `--concurrency` clients busy for
`--seconds` (after a short warm-up) and stops by itself. Requests are real: random known users,
real histories of the published version (their last 20 items), random items. Latency is measured
by the clients, so it includes the client's own queueing; on 2 cores the load generator and the
server share the machine, so the figures are a floor on what the service can do alone.

    .venv/bin/python -m benchmarks.serving_benchmark --dataset amazon-beauty --concurrency 32 --seconds 20 \\
        --out benchmarks/results/serving.jsonl

Targets (issue 31, 2 cores): by user id p50 <= 5 ms and p99 <= 25 ms at >= 500 requests/s; by
history through the published model p50 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ml.index.recommend import load_current
from ml.llm.local_server import free_port
from serving.settings import ServingSettings

logger = logging.getLogger("benchmarks.serving")

HISTORY_ITEMS = 20  # the last items of a real history: what a session-based client would post
TARGETS: dict[str, dict[str, float]] = {
    "user": {"p50_ms": 5.0, "p99_ms": 25.0, "requests_per_s": 500.0},
    "history": {"p50_ms": 20.0},
    "similar": {},
}

RequestMaker = Callable[[random.Random], tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]]


@dataclass(frozen=True)
class EndpointResult:
    """What one endpoint's timed load measured."""

    endpoint: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    targets: dict[str, float]
    meets_targets: bool


def request_makers(dataset: str, data_dir: Path) -> dict[str, RequestMaker]:
    """One random-request factory per endpoint, drawing users, histories and items from the published version."""
    loaded = load_current(ServingSettings(data_dir=data_dir).indexes_root, dataset)
    users = list(loaded.user_rows or {})
    if not users or loaded.user_histories is None:
        raise SystemExit(f"the {dataset} index {loaded.version} has no users or histories: re-run publishing")
    histories = [history[-HISTORY_ITEMS:] for history in loaded.user_histories if history]
    items = loaded.item_ids

    def user(rng: random.Random) -> tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]:
        return "GET", "/v1/recommendations", {"dataset": dataset, "user_id": rng.choice(users), "k": 10}, None

    def history(rng: random.Random) -> tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]:
        return "POST", "/v1/recommendations", None, {"dataset": dataset, "history": rng.choice(histories), "k": 10}

    def similar(rng: random.Random) -> tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]:
        return "GET", f"/v1/items/{rng.choice(items)}/similar", {"dataset": dataset, "k": 10}, None

    return {"user": user, "history": history, "similar": similar}


async def _load(url: str, make: RequestMaker, concurrency: int, seconds: float, seed: int) -> tuple[list[float], int]:
    """Keep `concurrency` clients sending until `seconds` pass; returns latencies (ms) of successes and errors."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker(number: int) -> None:
            nonlocal errors
            rng = random.Random(seed * 1000 + number)
            while time.perf_counter() < deadline:
                method, path, params, body = make(rng)
                started = time.perf_counter()
                response = await client.request(method, path, params=params, json=body)
                elapsed = (time.perf_counter() - started) * 1000.0
                if response.status_code == 200:
                    latencies.append(elapsed)
                else:
                    errors += 1
                    logger.warning("%s %s -> %d %s", method, path, response.status_code, response.text[:200])

        await asyncio.gather(*(worker(number) for number in range(concurrency)))
    return latencies, errors


def measure(url: str, name: str, make: RequestMaker, concurrency: int, seconds: float,
            warmup_seconds: float) -> EndpointResult:
    """Warm the endpoint up, then time `seconds` of load at `concurrency` and summarise it."""
    asyncio.run(_load(url, make, concurrency, warmup_seconds, seed=0))
    started = time.perf_counter()
    latencies, errors = asyncio.run(_load(url, make, concurrency, seconds, seed=1))
    elapsed = time.perf_counter() - started
    timings = np.asarray(latencies) if latencies else np.asarray([np.nan])
    result = {"p50_ms": float(np.percentile(timings, 50)), "p99_ms": float(np.percentile(timings, 99)),
              "requests_per_s": len(latencies) / elapsed}
    targets = TARGETS[name]
    meets = errors == 0 and all(result[key] >= bound if key == "requests_per_s" else result[key] <= bound
                                for key, bound in targets.items())
    return EndpointResult(
        endpoint=name, concurrency=concurrency, seconds=round(elapsed, 2), requests=len(latencies), errors=errors,
        requests_per_s=round(result["requests_per_s"], 1), p50_ms=round(result["p50_ms"], 2),
        p99_ms=round(result["p99_ms"], 2), mean_ms=round(float(np.mean(timings)), 2), targets=targets,
        meets_targets=meets)


def start_service(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`python -m serving` on `port`, logging to `log`; returns once `/readyz` answers 200."""
    process = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning"],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               env={**os.environ, "LLMREC_DATA_DIR": str(data_dir)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the service was not ready within 120 s; see {log}")


def main() -> None:
    """Start the service, load each endpoint in turn, print (and optionally append) the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--data-dir", type=Path, default=ServingSettings.from_env().data_dir)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--endpoints", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per endpoint")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    makers = request_makers(args.dataset, args.data_dir)
    port = free_port()
    log = Path(f"/tmp/serving-benchmark-{port}.log")
    load_before = os.getloadavg()[0]
    process = start_service(args.data_dir, port, log)
    try:
        for name in args.endpoints:
            result = measure(f"http://127.0.0.1:{port}", name, makers[name], args.concurrency, args.seconds,
                             args.warmup_seconds)
            record = {"dataset": args.dataset, **asdict(result), "cpus": os.cpu_count(),
                      "load_average_before": round(load_before, 2)}
            logger.info("%s", json.dumps(record))
            if args.out:
                with args.out.open("a") as out:
                    out.write(json.dumps(record) + "\n")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
