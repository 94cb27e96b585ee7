"""Stored code paths read back in vocabulary order, and refused when they do not cover exactly the vocabulary."""

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from ml.codes.tables import read_item_codes
from ml.data.warehouse import replace_dataset_rows

DDL = "item_id varchar not null, code_path integer[] not null"


def _store(con: duckdb.DuckDBPyConnection, rows: dict[str, list[int]]) -> None:
    table = pa.table({"item_id": list(rows), "code_path": pa.array(list(rows.values()), pa.list_(pa.int32()))})
    replace_dataset_rows(con, "enrichment.semantic_codes", "toy", table, DDL)


def test_codes_come_back_in_vocabulary_order_padded_with_minus_one() -> None:
    con = duckdb.connect()
    _store(con, {"b": [1, 0, 2], "a": [0, 3], "c": [2]})
    codes = read_item_codes(con, "enrichment.semantic_codes", "toy", ["a", "b", "c"])
    np.testing.assert_array_equal(codes, [[0, 3, -1], [1, 0, 2], [2, -1, -1]])


@pytest.mark.parametrize("rows", [{"a": [0]}, {"a": [0], "b": [1], "z": [2]}])
def test_a_table_that_does_not_cover_the_vocabulary_is_refused(rows: dict[str, list[int]]) -> None:
    con = duckdb.connect()
    _store(con, rows)
    with pytest.raises(ValueError, match="rematerialize"):
        read_item_codes(con, "enrichment.semantic_codes", "toy", ["a", "b"])


def test_an_empty_path_is_refused() -> None:
    con = duckdb.connect()
    _store(con, {"a": [0], "b": []})
    with pytest.raises(ValueError, match="empty or negative"):
        read_item_codes(con, "enrichment.semantic_codes", "toy", ["a", "b"])
