"""The dbt models, run by dbt on a real DuckDB file, against pure-Python references.

Many random bipartite graphs (plus long paths that need dozens of k-core passes) are packed into
one dataset with per-graph id prefixes: the k-core of a disjoint union is the union of the k-cores,
so one dbt build checks them all. Two datasets with different k share the warehouse, which also
proves that building one dataset never changes another's rows.
"""

import gzip
import json
import os
import random
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import pytest

from ml.data.ingest import ingest_dataset
from ml.data.registry import parse_registry
from orchestration.assets.dbt import dbt_build_args
from tests.conftest import DBT, TRANSFORMS, run_dbt

SESSION_GAP_S = 1800
BASE_TS = 1_600_000_000

Event = tuple[str, str, int, int, int]  # user, item, timestamp, event id, rating


def kcore_reference(edges: list[tuple[str, str, int]], k: int) -> tuple[set[int], int]:
    """Pure-Python iterative k-core over (user, item, event id) edges: surviving ids and passes."""
    alive = list(edges)
    passes = 0
    while True:
        passes += 1
        users = Counter(user for user, _, _ in alive)
        items = Counter(item for _, item, _ in alive)
        kept = [edge for edge in alive if users[edge[0]] >= k and items[edge[1]] >= k]
        if len(kept) == len(alive):
            return {event_id for _, _, event_id in alive}, passes
        alive = kept


def random_graph(rng: random.Random, prefix: str, n_users: int, n_items: int, n_edges: int) -> list[tuple[str, str]]:
    """A random bipartite multigraph with skewed item popularity."""
    return [
        (f"{prefix}u{rng.randrange(n_users)}", f"{prefix}i{int(n_items * rng.random() ** 2)}")
        for _ in range(n_edges)
    ]


def path_graph(prefix: str, length: int, k: int) -> list[tuple[str, str]]:
    """A chain of (k-1)-interaction links: peeling starts at its ends and needs about length/2 passes."""
    edges = []
    for position in range(length):
        user, item = f"{prefix}u{position}", f"{prefix}i{position}"
        next_user = f"{prefix}u{position + 1}"
        edges += [(user, item)] * (k - 1) + [(next_user, item)]
    return edges


def make_events(rng: random.Random, graphs: list[list[tuple[str, str]]]) -> list[Event]:
    """Events for the edges: gaps just under, at and over the session limit, ratings 1-5 (paths 5)."""
    events: list[Event] = []
    event_id = 0
    clock: dict[str, int] = defaultdict(lambda: BASE_TS)
    edges = [edge for graph in graphs for edge in graph]
    rng.shuffle(edges)
    for user, item in edges:
        event_id += 1
        clock[user] += rng.choice([0, 0, 1, SESSION_GAP_S - 1, SESSION_GAP_S, SESSION_GAP_S + 1, 86_400])
        rating = 5 if user.startswith("p") else rng.randint(1, 5)
        events.append((user, item, clock[user], event_id, rating))
    return events


def write_dataset(folder: Path, name: str, events: list[Event], duplicates: list[Event]) -> None:
    """Write one dataset's events as gzip JSON lines, then exact copies of some of them."""
    lines = [json.dumps({"user": u, "item": i, "ts": ts, "id": eid, "stars": r}) for u, i, ts, eid, r in events + duplicates]
    with gzip.open(folder / f"{name}.jsonl.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")


def interactions_of(spec: dict) -> list[Event]:
    """The reference interactions: distinct events rated at least min_rating (when it is set)."""
    return [event for event in spec["events"] if spec["min_rating"] is None or event[4] >= spec["min_rating"]]


REGISTRY = """
raw_dir: .
datasets:
{entries}
"""
ENTRY = """  {name}:
    events:
      path: {name}.jsonl.gz
      format: jsonl
      columns: {{user_id: user, item_id: item, timestamp: ts, event_id: id, rating: stars}}
    settings: {{k_core: {k}, session_gap_minutes: 30, min_rating: {min_rating}}}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two datasets (k=2 with all ratings, k=5 with min_rating 2) ingested and built by dbt into one warehouse."""
    folder = tmp_path_factory.mktemp("graphs")
    rng = random.Random(7)
    datasets = {}
    for name, k, min_rating in (("graphs-k2", 2, None), ("graphs-k5", 5, 2)):
        graphs = [random_graph(rng, f"g{g}", rng.randint(3, 40), rng.randint(3, 40), rng.randint(5, 300))
                  for g in range(40)]
        graphs += [path_graph(f"p{length}", length, k) for length in (10, 41, 60)]
        events = make_events(rng, graphs)
        duplicates = rng.sample(events, 25)
        write_dataset(folder, name, events, duplicates)
        datasets[name] = {"k": k, "min_rating": min_rating, "events": events, "duplicates": len(duplicates)}
    registry = parse_registry(REGISTRY.format(entries="".join(
        ENTRY.format(name=name, k=spec["k"], min_rating="null" if spec["min_rating"] is None else spec["min_rating"])
        for name, spec in datasets.items())), base_dir=folder)
    warehouse = folder / "warehouse.duckdb"
    env = {"LLMREC_DUCKDB_PATH": str(warehouse)}
    for name in datasets:
        with duckdb.connect(str(warehouse)) as con:
            ingest_dataset(con, registry, name)
        run_dbt(*dbt_build_args(registry.get(name)), env=env)
    # Rebuilding the first dataset must leave the second one's rows exactly as they were.
    with duckdb.connect(str(warehouse), read_only=True) as con:
        before = con.execute("select * from marts.interactions where dataset = 'graphs-k5' order by all").fetchall()
    run_dbt(*dbt_build_args(registry.get("graphs-k2")), env=env)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        after = con.execute("select * from marts.interactions where dataset = 'graphs-k5' order by all").fetchall()
    assert after == before
    return {"warehouse": warehouse, "datasets": datasets, "registry": registry}


def _query(built: dict, sql: str, dataset: str) -> list[tuple]:
    with duckdb.connect(str(built["warehouse"]), read_only=True) as con:
        return con.execute(sql, {"dataset": dataset}).fetchall()


@pytest.mark.parametrize("dataset", ["graphs-k2", "graphs-k5"])
def test_kcore_matches_the_python_fixed_point(built: dict, dataset: str) -> None:
    spec = built["datasets"][dataset]
    expected, passes = kcore_reference([(u, i, eid) for u, i, _, eid, _ in interactions_of(spec)], spec["k"])
    rows = _query(built, "select event_id, kcore_passes from intermediate.int_kcore_interactions "
                         "where dataset = $dataset", dataset)
    assert {event_id for event_id, _ in rows} == expected
    assert passes > 20, "the path graphs should need many passes"
    assert {kcore_passes for _, kcore_passes in rows} == {passes}


@pytest.mark.parametrize("dataset", ["graphs-k2", "graphs-k5"])
def test_sessions_match_the_python_reference(built: dict, dataset: str) -> None:
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in interactions_of(built["datasets"][dataset]):
        by_user[event[0]].append(event)
    expected = {}
    for user, events in by_user.items():
        events.sort(key=lambda event: (event[2], event[3]))
        session, position, previous = 0, 0, None
        for _, _, ts, event_id, _ in events:
            if previous is None or ts - previous > SESSION_GAP_S:
                session, position = session + 1, 0
            position += 1
            expected[event_id] = (f"{user}#{session}", position)
            previous = ts
    rows = _query(built, "select event_id, session_id, position_in_session from intermediate.int_sessions "
                         "where dataset = $dataset", dataset)
    assert {event_id: (session, position) for event_id, session, position in rows} == expected


@pytest.mark.parametrize("dataset", ["graphs-k2", "graphs-k5"])
def test_leave_one_out_split_of_the_kcore_sequences(built: dict, dataset: str) -> None:
    spec = built["datasets"][dataset]
    survivors, _ = kcore_reference([(u, i, eid) for u, i, _, eid, _ in interactions_of(spec)], spec["k"])
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in spec["events"]:
        if event[3] in survivors:
            by_user[event[0]].append(event)
    expected = {}
    for user, events in by_user.items():
        if len(events) < 3:
            continue
        events.sort(key=lambda event: (event[2], event[3]))
        items = [item for _, item, _, _, _ in events]
        expected[user] = (items[:-2], items[-2], items[-1])
    rows = _query(built, "select user_id, train_item_ids, valid_item_id, test_item_id "
                         "from marts.user_sequences where dataset = $dataset", dataset)
    assert {user: (train, valid, test) for user, train, valid, test in rows} == expected
    stats = _query(built, "select users, interactions, users_excluded_short, duplicate_events_removed, "
                          "events_below_min_rating from marts.dataset_stats where dataset = $dataset", dataset)
    short_users = sum(1 for user in {u for u, _, _, eid, _ in spec["events"] if eid in survivors}
                      if user not in expected)
    below = len(spec["events"]) - len(interactions_of(spec))
    assert stats == [(len(expected), sum(len(v[0]) + 2 for v in expected.values()), short_users,
                      spec["duplicates"], below)]
    assert (below > 0) == (spec["min_rating"] is not None)


def test_dbt_unit_tests_pass(built: dict) -> None:
    """The YAML unit tests (dedup, session gap boundary and ties, split, item text); the k-core's pass
    loop runs in a pre-hook, which unit tests skip: test_kcore_model.py tests it."""
    # dbt unit tests read column types from the built relations, so they run on the built warehouse.
    result = run_dbt("test", "--select", "test_type:unit", "--vars", '{"dataset": "unit"}',
                     env={"LLMREC_DUCKDB_PATH": str(built["warehouse"])})
    assert "PASS=7" in result.stdout


def test_a_log_without_timestamps_is_split_by_event_id_and_has_no_sessions(built: dict) -> None:
    """The k=2 events again, without their timestamps: ordered by event id, sessions unknown (NULL)."""
    folder = built["warehouse"].parent
    events = built["datasets"]["graphs-k2"]["events"]
    lines = [json.dumps({"user": u, "item": i, "id": eid, "stars": r}) for u, i, _, eid, r in events]
    random.Random(3).shuffle(lines)  # line order differs from event id order: the event id must win
    (folder / "untimed.jsonl").write_text("\n".join(lines) + "\n")
    registry = parse_registry(REGISTRY.format(entries="""  untimed:
    events:
      path: untimed.jsonl
      format: jsonl
      columns: {user_id: user, item_id: item, event_id: id, rating: stars}
    settings: {k_core: 2}
"""), base_dir=folder)
    with duckdb.connect(str(built["warehouse"])) as con:
        assert ingest_dataset(con, registry, "untimed").events_quarantined == 0
    run_dbt(*dbt_build_args(registry.get("untimed")), env={"LLMREC_DUCKDB_PATH": str(built["warehouse"])})

    survivors, _ = kcore_reference([(u, i, eid) for u, i, _, eid, _ in events], 2)
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in sorted(events, key=lambda event: event[3]):  # event id order, whatever the timestamps said
        if event[3] in survivors:
            by_user[event[0]].append(event)
    expected = {user: ([e[1] for e in seq[:-2]], seq[-2][1], seq[-1][1]) for user, seq in by_user.items()
                if len(seq) >= 3}
    rows = _query(built, "select user_id, train_item_ids, valid_item_id, test_item_id, n_sessions "
                         "from marts.user_sequences where dataset = $dataset", "untimed")
    assert {user: (train, valid, test) for user, train, valid, test, _ in rows} == expected
    assert {n_sessions for *_, n_sessions in rows} == {None}
    sessions = _query(built, "select count(*), count(session_id), count(timestamp_s) from marts.interactions "
                             "where dataset = $dataset", "untimed")
    assert sessions[0][0] > 0 and sessions[0][1:] == (0, 0)
    assert _query(built, "select sessions from marts.dataset_stats where dataset = $dataset", "untimed") == [(None,)]

    # A timestamped dataset builds beside it: each data test judges only the partition being built, so the
    # untimed rows' NULL timestamps and sessions cannot fail the timestamped build (they did before).
    env = {"LLMREC_DUCKDB_PATH": str(built["warehouse"])}
    before = {name: _partition_rows(built, name) for name in ("untimed", "graphs-k2")}
    result = run_dbt(*dbt_build_args(built["registry"].get("graphs-k2")), env=env)
    assert "not_null_stg_events_timestamp_s" in result.stdout and "ERROR=0" in result.stdout
    assert {name: _partition_rows(built, name) for name in before} == before
    run_dbt(*dbt_build_args(registry.get("untimed")), env=env)
    assert {name: _partition_rows(built, name) for name in before} == before


PARTITIONED_TABLES = ("staging.stg_events", "intermediate.int_sessions", "intermediate.int_kcore_interactions",
                      "marts.interactions", "marts.user_sequences", "marts.item_catalog", "marts.dataset_stats")


def _partition_rows(built: dict, dataset: str) -> dict[str, list[tuple]]:
    """Every partitioned table's rows of one dataset, sorted."""
    return {table: _query(built, f"select * from {table} where dataset = $dataset order by all", dataset)
            for table in PARTITIONED_TABLES}


def test_a_changed_table_schema_fails_clearly_and_keeps_the_old_rows(built: dict, tmp_path: Path) -> None:
    """A partitioned table whose columns no longer match its query: the build names the columns and
    rolls back, so the dataset's rows (deleted by the pre-hook in the same transaction) stay."""
    warehouse = tmp_path / built["warehouse"].name  # the file name is the catalog name dbt compiles against
    warehouse.write_bytes(built["warehouse"].read_bytes())
    with duckdb.connect(str(warehouse)) as con:
        con.execute("alter table marts.dataset_stats add column legacy_count integer")
        before = con.execute("select * from marts.dataset_stats where dataset = 'graphs-k2'").fetchall()
    result = subprocess.run(
        [DBT, *dbt_build_args(built["registry"].get("graphs-k2")), "--select", "dataset_stats",
         "--project-dir", str(TRANSFORMS), "--profiles-dir", str(TRANSFORMS)],
        capture_output=True, text=True, env={**os.environ, "LLMREC_DUCKDB_PATH": str(warehouse)}, check=False,
    )
    assert result.returncode != 0
    assert "the columns of" in result.stdout and "gone: ['legacy_count']" in result.stdout, result.stdout[-3000:]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        after = con.execute("select * from marts.dataset_stats where dataset = 'graphs-k2'").fetchall()
    assert before and after == before
