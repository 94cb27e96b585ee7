"""The k-core Python model's pass loop (transforms/models/intermediate/int_kcore_interactions.py) on DuckDB.

dbt unit tests cover SQL models only, so the loop the model runs is loaded from the model file and
run on hand-checked graphs; tests/dbt/test_data_layer_models.py runs the whole model through dbt.
"""

import importlib.util
from pathlib import Path
from types import ModuleType

import duckdb
import pytest

MODEL_FILE = Path(__file__).resolve().parents[2] / "transforms/models/intermediate/int_kcore_interactions.py"


def _model_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("int_kcore_interactions", MODEL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(edges: list[tuple[str, str]], k: int) -> tuple[list[tuple[int, str, str]], int]:
    """Survivors (ingest_order, user, item) and passes of the model's loop over `edges` numbered from 1."""
    con = duckdb.connect()
    con.execute("create temp table edges (ingest_order bigint, user_id varchar, item_id varchar)")
    con.executemany("insert into edges values (?, ?, ?)",
                    [(order, user, item) for order, (user, item) in enumerate(edges, start=1)])
    passes = _model_module().kcore_fixed_point(con, "edges", k)
    return con.execute("select * from edges order by ingest_order").fetchall(), passes


def test_peels_a_chain_over_several_passes() -> None:
    """k = 2 on a path u1-a-u2-b-u3-c-u4 plus a 2x2 block: the path's ends peel pass by pass; the block stays."""
    chain = [("u1", "a"), ("u2", "a"), ("u2", "b"), ("u3", "b"), ("u3", "c"), ("u4", "c")]
    block = [("u5", "x"), ("u5", "y"), ("u6", "x"), ("u6", "y")]
    survivors, passes = _run(chain + block, k=2)
    assert survivors == [(7, "u5", "x"), (8, "u5", "y"), (9, "u6", "x"), (10, "u6", "y")]
    # Pass 1 drops u1 and u4, pass 2 then a and c, pass 3 u2 and u3 (with b); pass 4 finds nothing.
    assert passes == 4


def test_is_empty_when_nothing_meets_k() -> None:
    """k = 3 on a 2x2 block removes everything in one pass, and the second pass finds nothing."""
    survivors, passes = _run([("u1", "x"), ("u1", "y"), ("u2", "x"), ("u2", "y")], k=3)
    assert survivors == []
    assert passes == 2


@pytest.mark.parametrize("k", [1, 2])
def test_a_graph_already_at_its_core_takes_one_pass(k: int) -> None:
    """Nothing to remove: one pass that deletes nothing."""
    block = [("u5", "x"), ("u5", "y"), ("u6", "x"), ("u6", "y")]
    survivors, passes = _run(block, k=k)
    assert len(survivors) == 4
    assert passes == 1
