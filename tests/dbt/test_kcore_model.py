"""The k-core macro loop (transforms/macros/kcore.sql), run by dbt on a DuckDB file, on hand-checked graphs.

dbt unit tests cover a model's query, not the pre-hook that peels the edges, so the loop the hook runs
is called here with `dbt run-operation` on an edges table; tests/dbt/test_data_layer_models.py runs
the whole model through `dbt build` against a pure-Python reference.
"""

import json
import re
from pathlib import Path

import duckdb
import pytest

from tests.conftest import run_dbt

PASS_LINE = re.compile(r"k-core pass (\d+) removed (\d+) rows")


def _run(tmp_path: Path, edges: list[tuple[str, str]], k: int) -> tuple[list[tuple[int, str, str]], list[int]]:
    """Survivors (ingest_order, user, item) and the rows each pass removed, over `edges` numbered from 1."""
    warehouse = tmp_path / "kcore.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create table edges (ingest_order bigint, user_id varchar, item_id varchar)")
        con.executemany("insert into edges values (?, ?, ?)",
                        [(order, user, item) for order, (user, item) in enumerate(edges, start=1)])
    result = run_dbt("run-operation", "kcore_fixed_point", "--args", json.dumps({"edges": "main.edges", "k": k}),
                     env={"LLMREC_DUCKDB_PATH": str(warehouse)})
    removed_per_pass = [int(removed) for _, removed in PASS_LINE.findall(result.stdout)]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("select * from edges order by ingest_order").fetchall(), removed_per_pass


def test_peels_a_chain_over_several_passes(tmp_path: Path) -> None:
    """k = 2 on a path u1-a-u2-b-u3-c-u4 plus a 2x2 block: the path's ends peel pass by pass; the block stays."""
    chain = [("u1", "a"), ("u2", "a"), ("u2", "b"), ("u3", "b"), ("u3", "c"), ("u4", "c")]
    block = [("u5", "x"), ("u5", "y"), ("u6", "x"), ("u6", "y")]
    survivors, removed = _run(tmp_path, chain + block, k=2)
    assert survivors == [(7, "u5", "x"), (8, "u5", "y"), (9, "u6", "x"), (10, "u6", "y")]
    # Pass 1 drops u1 and u4, pass 2 then a and c, pass 3 u2 and u3 (with b); pass 4 finds nothing.
    assert removed == [2, 2, 2, 0]


def test_is_empty_when_nothing_meets_k(tmp_path: Path) -> None:
    """k = 3 on a 2x2 block removes everything in one pass, and the second pass finds nothing."""
    survivors, removed = _run(tmp_path, [("u1", "x"), ("u1", "y"), ("u2", "x"), ("u2", "y")], k=3)
    assert survivors == []
    assert removed == [4, 0]


@pytest.mark.parametrize("k", [1, 2])
def test_a_graph_already_at_its_core_takes_one_pass(tmp_path: Path, k: int) -> None:
    """Nothing to remove: one pass that deletes nothing."""
    block = [("u5", "x"), ("u5", "y"), ("u6", "x"), ("u6", "y")]
    survivors, removed = _run(tmp_path, block, k=k)
    assert len(survivors) == 4
    assert removed == [0]
