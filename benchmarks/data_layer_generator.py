"""The synthetic click log and its dataset registry that the data layer benchmark runs on."""

from __future__ import annotations

from pathlib import Path

import duckdb
import yaml

DATASET = "synthetic"
K_CORE = 5
SESSION_GAP_MINUTES = 30
TIMESTAMP_MIN_S = 1_500_000_000
TIMESTAMP_SPAN_S = 100_000_000
# Each user is active around a few anchor times; events fall in a window after one of them.
ANCHORS_PER_USER = 4
ANCHOR_WINDOW_S = 7_200


def sql_path(path: Path) -> str:
    """A path as a single-quoted SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def generate_log(workdir: Path, events: int, users: int, items: int, seed: int) -> None:
    """Write events.jsonl.gz (skewed users and items, clustered timestamps) and items.jsonl.gz."""
    con = duckdb.connect()
    try:
        draw_random_values(con, events, users, seed)
        # Items are Zipf-like (P(k) ~ 1/k): a long tail of rare items that the 5-core removes.
        # Users are skewed too (density ~ 1/sqrt(x)), so some users fall below k as well.
        con.execute(
            f"""
            copy (
                select
                    d.event_id,
                    'u' || d.user_index as user_id,
                    'i' || cast(floor(pow({items} + 1, d.item_u)) as bigint) as item_id,
                    'click' as event_type,
                    {TIMESTAMP_MIN_S} + a.anchor_s + cast(floor({ANCHOR_WINDOW_S} * d.offset_u) as bigint)
                        as timestamp
                from drawn d
                join anchors a on a.user_index = d.user_index and a.anchor = d.anchor
                order by d.event_id
            ) to {sql_path(workdir / "events.jsonl.gz")} (format json, compression gzip)
            """
        )
        con.execute(
            f"""
            copy (
                select 'i' || range as item_id, 'Synthetic item ' || range as title
                from range(1, {items} + 1)
                order by range
            ) to {sql_path(workdir / "items.jsonl.gz")} (format json, compression gzip)
            """
        )
    finally:
        con.close()


def draw_random_values(con: duckdb.DuckDBPyConnection, events: int, users: int, seed: int) -> None:
    """Draw every random value into temp tables `anchors` and `drawn`, reproducibly from `seed`."""
    # random() after setseed() repeats only when one thread evaluates it in a fixed order.
    con.execute("set threads = 1")
    con.execute("select setseed($seed)", {"seed": (seed % 1_000_003) / 1_000_003})
    con.execute(
        f"""
        create temp table anchors as
        select u.range as user_index, a.range as anchor,
               cast(floor(random() * {TIMESTAMP_SPAN_S - ANCHOR_WINDOW_S}) as bigint) as anchor_s
        from range(1, {users} + 1) u, range({ANCHORS_PER_USER}) a
        order by user_index, anchor
        """
    )
    con.execute(
        f"""
        create temp table drawn as
        select range as event_id,
               1 + cast(floor({users} * pow(random(), 2)) as bigint) as user_index,
               random() as item_u,
               cast(floor({ANCHORS_PER_USER} * random()) as bigint) as anchor,
               random() as offset_u
        from range(1, {events} + 1)
        """
    )
    con.execute("reset threads")


def write_registry(workdir: Path) -> Path:
    """Write the workdir's datasets.yaml describing the synthetic dataset; return its path."""
    registry = {
        "raw_dir": ".",  # the generated files sit beside the registry in the work folder
        "default_dataset": DATASET,
        "datasets": {
            DATASET: {
                "description": "synthetic benchmark log",
                "events": {
                    "path": "events.jsonl.gz",
                    "format": "jsonl",
                    "columns": {name: name for name in
                                ("user_id", "item_id", "timestamp", "event_id", "event_type")},
                },
                "items": {
                    "path": "items.jsonl.gz",
                    "format": "jsonl",
                    "columns": {"item_id": "item_id", "title": "title"},
                },
                "settings": {"k_core": K_CORE, "session_gap_minutes": SESSION_GAP_MINUTES},
            }
        },
    }
    path = workdir / "datasets.yaml"
    path.write_text(yaml.safe_dump(registry, sort_keys=False), encoding="utf-8")
    return path
