"""Loading leave-one-out sequences from the marts: vocabulary, user order, indices, histories, errors."""

from pathlib import Path

import duckdb
import numpy as np
import pytest

from ml.data.sequences import load_sequences

CATALOG = [
    ("tiny", "b", True), ("tiny", "a", True), ("tiny", "d", True), ("tiny", "c", True),
    ("tiny", "z", False),  # catalog-only item: not in the vocabulary
    ("other", "a", True),
]
SEQUENCES = [
    ("tiny", "u2", ["c", "a", "b", "d"]),
    ("tiny", "u1", ["a", "b", "c", "d", "a"]),
    ("tiny", "u3", ["d", "c", "b"]),
    ("other", "u9", ["a", "a", "a"]),
]


def _warehouse(path: Path, sequences: list[tuple[str, str, list[str]]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("create schema marts")
    con.execute("create table marts.item_catalog (dataset varchar, item_id varchar, in_interactions boolean)")
    con.executemany("insert into marts.item_catalog values (?, ?, ?)", CATALOG)
    con.execute("""
        create table marts.user_sequences (
            dataset varchar, user_id varchar, sequence_length bigint, item_ids varchar[], timestamps_s double[],
            train_item_ids varchar[], valid_item_id varchar, test_item_id varchar, n_sessions bigint
        )
    """)
    for dataset, user, items in sequences:
        con.execute(
            "insert into marts.user_sequences values (?, ?, ?, ?, ?, ?, ?, ?, 1)",
            [dataset, user, len(items), items, [float(t) for t in range(len(items))], items[:-2], items[-2], items[-1]],
        )
    return con


def test_vocabulary_users_and_indices(tmp_path: Path) -> None:
    data = load_sequences(_warehouse(tmp_path / "w.duckdb", SEQUENCES), "tiny")
    assert data.item_ids == ["a", "b", "c", "d"]  # sorted, in_interactions only: a=1, b=2, c=3, d=4
    assert data.n_items == 4 and data.n_users == 3
    assert data.user_ids == ["u1", "u2", "u3"]
    assert [seq.tolist() for seq in data.train] == [[1, 2, 3], [3, 1], [4]]
    assert all(seq.dtype == np.int64 for seq in data.train)
    assert data.valid_targets.tolist() == [4, 2, 3] and data.valid_targets.dtype == np.int64
    assert data.test_targets.tolist() == [1, 4, 2]


def test_histories_per_split(tmp_path: Path) -> None:
    data = load_sequences(_warehouse(tmp_path / "w.duckdb", SEQUENCES), "tiny")
    valid_histories, valid_targets = data.history("valid")
    assert [h.tolist() for h in valid_histories] == [[1, 2, 3], [3, 1], [4]]
    assert valid_targets.tolist() == [4, 2, 3]
    test_histories, test_targets = data.history("test")
    assert [h.tolist() for h in test_histories] == [[1, 2, 3, 4], [3, 1, 2], [4, 3]]
    assert test_targets.tolist() == [1, 4, 2]
    with pytest.raises(ValueError, match="split"):
        data.history("train")  # type: ignore[arg-type]


def test_unknown_item_is_an_error(tmp_path: Path) -> None:
    con = _warehouse(tmp_path / "w.duckdb", [*SEQUENCES, ("tiny", "u4", ["a", "q", "b", "z"])])
    with pytest.raises(ValueError, match=r"not in the item vocabulary.*'q'"):
        load_sequences(con, "tiny")


def test_unknown_target_is_an_error(tmp_path: Path) -> None:
    con = _warehouse(tmp_path / "w.duckdb", [*SEQUENCES, ("tiny", "u4", ["a", "b", "c", "z"])])
    with pytest.raises(ValueError, match=r"test items not in the item vocabulary.*'z'"):
        load_sequences(con, "tiny")


def test_dataset_without_rows_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no rows"):
        load_sequences(_warehouse(tmp_path / "w.duckdb", SEQUENCES), "missing")
