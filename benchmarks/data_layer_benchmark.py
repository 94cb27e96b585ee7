"""Benchmark the data layer (ingestion + dbt) against the same transformations written directly in DuckDB.

What is measured, on one synthetic event log generated deterministically with DuckDB SQL:

* generation: writing the gzip JSON-lines event log and item catalog (reported apart, not compared);
* "ours": the pipeline as Dagster runs it for one dataset partition, i.e. `ml.data.ingest.ingest_dataset`
  into a fresh DuckDB file (in a child process, timed inside it, with the warehouse's memory cap), then
  `dbt build` (models + tests) as a subprocess with the partition's vars; each one's peak RSS is polled;
* "direct": one DuckDB connection, in one script run, reading the same file with `read_json`, removing
  exact duplicates, sessionizing (30-minute gap), iterating the 5-core to its fixed point with a Python
  loop of DELETE statements, and writing the leave-one-out split to a table.

The two results are checked to be identical (counts and every split row); then `dbt build` runs again
on the same warehouse (a per-dataset rerun, timed) and the check is repeated. The times, the ratio and
the peak memory are printed and written to `<workdir>/results.json`.

    .venv/bin/python -m benchmarks.data_layer_benchmark --events 200000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from benchmarks.data_layer_generator import DATASET, generate_log, sql_path, write_registry
from benchmarks.data_layer_reference import Counts, direct_counts, run_direct

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "transforms"
# How often a child process's peak memory (VmHWM, a running maximum) is read.
RSS_POLL_S = 0.2
# The line the ingestion child prints its seconds on.
INGEST_RESULT = "ingestion seconds: "

logger = logging.getLogger("data_layer_benchmark")
T = TypeVar("T")


# ---------------------------------------------------------------- helpers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (users and items default to events/20 and events/50)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000, help="number of synthetic events")
    parser.add_argument("--users", type=int, default=None, help="number of users (default: events // 20)")
    parser.add_argument("--items", type=int, default=None, help="number of items (default: events // 50)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the synthetic log")
    parser.add_argument("--workdir", type=Path, default=None, help="work folder (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the figures (results.json) here, e.g. benchmarks/results/data_layer_10m.json")
    parser.add_argument("--ingest-only", nargs=2, type=Path, metavar=("REGISTRY", "WAREHOUSE"),
                        help=argparse.SUPPRESS)  # the ingestion child process of a benchmark run
    args = parser.parse_args(argv)
    args.users = args.users if args.users is not None else max(1, args.events // 20)
    args.items = args.items if args.items is not None else max(1, args.events // 50)
    if min(args.events, args.users, args.items) < 1:
        parser.error("--events, --users and --items must be positive")
    return args


def timed(label: str, action: Callable[[], T]) -> tuple[T, float]:
    """Run `action`, log and return its result with the wall-clock seconds it took."""
    logger.info("%s: starting", label)
    start = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - start
    logger.info("%s: %.2f s (peak RSS so far %.0f MB)", label, seconds, peak_rss_mb(resource.RUSAGE_SELF))
    return result, seconds


def peak_rss_mb(who: int) -> float:
    """Peak resident set size in MB of this process (RUSAGE_SELF) or its waited-for children."""
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports kilobytes


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> Any:
    """The single value a query returns."""
    row = con.execute(sql, params or {}).fetchone()
    if row is None:
        raise SystemExit(f"query returned no row: {sql}")
    return row[0]


# ---------------------------------------------------------------- ours: ingestion + dbt


def run_ingestion(registry_file: Path, warehouse: Path) -> float:
    """Ingest the synthetic dataset into `warehouse` exactly as the Dagster raw asset does; return its seconds.

    Runs in this process; `run_ingestion_process` runs it in a child so that its memory is its own.
    """
    from ml.data.ingest import ingest_dataset
    from ml.data.registry import load_registry
    from ml.data.warehouse import open_warehouse

    registry = load_registry(registry_file)
    start = time.perf_counter()
    with open_warehouse(warehouse) as con:  # the asset's connection: the same memory cap
        report = ingest_dataset(con, registry, DATASET)
    seconds = time.perf_counter() - start
    if report.events_quarantined or report.quarantined.get("items"):
        raise SystemExit(
            f"ingestion quarantined synthetic rows, the log generator is wrong: {report.quarantined}"
        )
    return seconds


def run_ingestion_process(registry_file: Path, warehouse: Path, log_file: Path) -> tuple[float, float]:
    """Ingestion in a child process: (its seconds, measured inside, without interpreter start-up; its peak RSS MB)."""
    command = [sys.executable, "-m", "benchmarks.data_layer_benchmark", "--ingest-only",
               str(registry_file), str(warehouse)]
    peak_mb = run_polled(command, log_file, PROJECT_ROOT)
    lines = [line for line in log_file.read_text(encoding="utf-8").splitlines() if line.startswith(INGEST_RESULT)]
    if not lines:
        raise SystemExit(f"the ingestion process printed no {INGEST_RESULT!r} line; see {log_file}")
    return float(lines[-1].removeprefix(INGEST_RESULT)), peak_mb


def dbt_command(registry_file: Path, workdir: Path) -> list[str]:
    """The `dbt build` command line Dagster runs for the synthetic partition (same vars and project)."""
    from ml.data.registry import load_registry
    from orchestration.assets.dbt import dbt_vars

    dbt_vars_json = json.dumps(dbt_vars(load_registry(registry_file).get(DATASET)), sort_keys=True)
    return [
        str(Path(sys.executable).parent / "dbt"), "build", "--vars", dbt_vars_json,
        "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(workdir / "dbt_target"),
    ]


def run_polled(command: list[str], log_file: Path, cwd: Path) -> float:
    """Run a command (output to `log_file`), failing if it fails; return its own peak RSS in MB."""
    logger.info("command: %s (output in %s)", " ".join(command), log_file)
    peak_kb = 0
    with log_file.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        while True:
            try:
                returncode = process.wait(timeout=RSS_POLL_S)
                break
            except subprocess.TimeoutExpired:
                peak_kb = max(peak_kb, high_water_rss_kb(process.pid))
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, command)
    return peak_kb / 1024


def dbt_step_seconds(target_path: Path) -> dict[str, float]:
    """Seconds of each model, and of all data tests and all unit tests together, from dbt's run_results.json."""
    results = json.loads((target_path / "run_results.json").read_text(encoding="utf-8"))["results"]
    seconds: dict[str, float] = {}
    for node in results:
        kind, name = node["unique_id"].split(".")[0], node["unique_id"].split(".")[-1]
        key = name if kind == "model" else f"{kind}s (all)"
        seconds[key] = seconds.get(key, 0.0) + float(node["execution_time"])
    return {key: round(value, 2) for key, value in sorted(seconds.items(), key=lambda item: -item[1])}


def high_water_rss_kb(pid: int) -> int:
    """A running process's peak resident set (VmHWM) in kB, or 0 when it has just exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except (FileNotFoundError, ProcessLookupError):
        return 0  # exited between wait() and this read; its earlier readings stand
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def ours_counts(warehouse: Path) -> Counts:
    """Users, items, interactions and k-core passes that dbt recorded in marts.dataset_stats."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        row = con.execute(
            "select users, items, interactions, kcore_passes from marts.dataset_stats "
            "where dataset = $dataset",
            {"dataset": DATASET},
        ).fetchone()
    finally:
        con.close()
    if row is None:
        raise SystemExit(f"marts.dataset_stats has no row for dataset {DATASET!r}")
    return Counts(*(int(value) for value in row))


# ---------------------------------------------------------------- verification


_COMPARED = "user_id, item_id, split, event_id, timestamp_s, sequence_position, session_id"


def row_differences(ours: Path, direct: Path) -> tuple[int, int]:
    """Split rows only in ours and only in direct (multiset EXCEPT ALL across the two files)."""
    con = duckdb.connect()
    try:
        con.execute(f"attach {sql_path(ours)} as ours (read_only)")
        con.execute(f"attach {sql_path(direct)} as direct (read_only)")
        ours_rows = f"select {_COMPARED} from ours.marts.interactions where dataset = '{DATASET}'"
        direct_rows = f"select {_COMPARED} from direct.main.interactions"
        only_ours = scalar(con, f"select count(*) from ({ours_rows} except all {direct_rows})")
        only_direct = scalar(con, f"select count(*) from ({direct_rows} except all {ours_rows})")
    finally:
        con.close()
    return int(only_ours), int(only_direct)


def verify(ours: Counts, direct: Counts, ours_db: Path, direct_db: Path) -> None:
    """Fail loudly unless both runs produced the same counts, passes and split rows."""
    if ours != direct:
        raise SystemExit(f"results differ: ours (marts.dataset_stats) {ours} != direct {direct}")
    only_ours, only_direct = row_differences(ours_db, direct_db)
    if only_ours or only_direct:
        raise SystemExit(
            f"split rows differ: {only_ours} rows only in ours ({ours_db}), "
            f"{only_direct} rows only in direct ({direct_db}); compared columns: {_COMPARED}"
        )
    logger.info("verified: both runs give the same %d split rows (%s)", ours.interactions, _COMPARED)


# ---------------------------------------------------------------- main


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Generate the log, time ours and direct, verify them and return the figures."""
    _, generation_s = timed("generation", lambda: generate_log(
        workdir, args.events, args.users, args.items, args.seed))
    rss_after_generation = peak_rss_mb(resource.RUSAGE_SELF)
    registry_file = write_registry(workdir)
    ours_db, direct_db = workdir / "ours.duckdb", workdir / "direct.duckdb"
    # dbt's profile and the orchestration package read the warehouse path from this variable.
    os.environ["LLMREC_DUCKDB_PATH"] = str(ours_db)
    (ingestion_s, ingestion_peak_rss), _ = timed(
        "ours: ingestion", lambda: run_ingestion_process(registry_file, ours_db, workdir / "ingestion.log"))
    # Built before timing: importing the orchestration package (Dagster) is not part of the dbt run.
    command = dbt_command(registry_file, workdir)
    dbt_peak_rss, dbt_s = timed("ours: dbt build", lambda: run_polled(command, workdir / "dbt_build.log",
                                                                      DBT_PROJECT_DIR))
    dbt_steps = dbt_step_seconds(workdir / "dbt_target")  # before the rerun overwrites run_results.json
    passes, direct_s = timed("direct: DuckDB SQL", lambda: run_direct(workdir / "events.jsonl.gz", direct_db))
    ours = ours_counts(ours_db)
    direct = direct_counts(direct_db, passes)
    verify(ours, direct, ours_db, direct_db)
    # A per-dataset rerun (a backfill, a retrain's data refresh) replaces the partition's rows in place:
    # it must give the same rows, and should cost no more than the first build.
    dbt_rerun_peak_rss, dbt_rerun_s = timed("ours: dbt build again (rerun)", lambda: run_polled(
        command, workdir / "dbt_rerun.log", DBT_PROJECT_DIR))
    verify(ours_counts(ours_db), direct, ours_db, direct_db)
    ours_s = ingestion_s + dbt_s
    return {
        "events": args.events,
        "users_requested": args.users,
        "items_requested": args.items,
        "seed": args.seed,
        "users_after_kcore": ours.users,
        "items_after_kcore": ours.items,
        "interactions_after_kcore": ours.interactions,
        "kcore_passes": ours.kcore_passes,
        "generation_s": round(generation_s, 3),
        "ours_ingestion_s": round(ingestion_s, 3),
        "ours_dbt_s": round(dbt_s, 3),
        "ours_dbt_rerun_s": round(dbt_rerun_s, 3),
        "ours_total_s": round(ours_s, 3),
        "direct_s": round(direct_s, 3),
        "ratio_ours_over_direct": round(ours_s / direct_s, 2),
        # ru_maxrss is a running maximum: each figure covers every phase before it in this process.
        "peak_rss_self_after_generation_mb": round(rss_after_generation, 1),
        "peak_rss_ingestion_polled_mb": round(ingestion_peak_rss, 1),
        "peak_rss_self_mb": round(peak_rss_mb(resource.RUSAGE_SELF), 1),
        # Linux counts a child's RSS from before its exec (this process's), so this is >= our RSS then.
        "peak_rss_children_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1),
        "peak_rss_dbt_polled_mb": round(dbt_peak_rss, 1),
        "peak_rss_dbt_rerun_polled_mb": round(dbt_rerun_peak_rss, 1),
        "dbt_step_s": dbt_steps,
        "workdir": str(workdir),
    }


def format_report(results: dict[str, Any]) -> str:
    """The human-readable final figures."""
    lines = [
        f"events                         {results['events']:,}",
        f"users after 5-core + split     {results['users_after_kcore']:,}",
        f"items after 5-core + split     {results['items_after_kcore']:,}",
        f"interactions after 5-core      {results['interactions_after_kcore']:,}",
        f"k-core passes                  {results['kcore_passes']}",
        f"generation                     {results['generation_s']:.2f} s",
        f"ours: ingestion                {results['ours_ingestion_s']:.2f} s",
        f"ours: dbt build                {results['ours_dbt_s']:.2f} s",
        f"ours: total                    {results['ours_total_s']:.2f} s",
        f"direct DuckDB SQL              {results['direct_s']:.2f} s",
        f"ratio ours / direct            {results['ratio_ours_over_direct']:.2f}x",
        f"ours: dbt build, rerun         {results['ours_dbt_rerun_s']:.2f} s (same rows, checked again)",
        f"peak RSS, this process         {results['peak_rss_self_mb']:.0f} MB (all phases)",
        f"  ... up to end of generation  {results['peak_rss_self_after_generation_mb']:.0f} MB",
        f"peak RSS, ingestion (polled)   {results['peak_rss_ingestion_polled_mb']:.0f} MB "
        "(its own process, as the Dagster step; seconds timed inside it)",
        f"peak RSS, children (getrusage) {results['peak_rss_children_mb']:.0f} MB "
        "(ingestion or dbt; floored at this process's RSS when they were spawned)",
        f"peak RSS, dbt (polled VmHWM)   {results['peak_rss_dbt_polled_mb']:.0f} MB",
        f"peak RSS, dbt rerun (polled)   {results['peak_rss_dbt_rerun_polled_mb']:.0f} MB",
        "dbt steps (dbt's own timing; the rest of the build is dbt start-up and parsing):",
        *(f"  {name:<28} {seconds:.2f} s" for name, seconds in results["dbt_step_s"].items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the benchmark in the work folder, print and save the figures."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.ingest_only:
        seconds = run_ingestion(*args.ingest_only)
        sys.stdout.write(f"{INGEST_RESULT}{seconds:.3f}\n")
        return
    workdir = args.workdir if args.workdir is not None else Path(tempfile.mkdtemp(prefix="llmrec-bench-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise SystemExit(f"--workdir {workdir} is not empty; the benchmark needs fresh DuckDB files")
    logger.info("workdir %s: %d events, %d users, %d items, seed %d",
                workdir, args.events, args.users, args.items, args.seed)
    results = run_benchmark(args, workdir)
    for path in [workdir / "results.json", *([args.out] if args.out else [])]:
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(format_report(results))
    if args.keep:
        logger.info("kept %s (results in results.json)", workdir)
    else:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
