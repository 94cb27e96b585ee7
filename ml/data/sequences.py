"""Leave-one-out user sequences of one dataset as item indices, read from `marts.user_sequences`.

The vocabulary is the set of items that occur in interactions (`marts.item_catalog.in_interactions`),
sorted by item id; item `item_ids[i]` has index `i + 1`, and index 0 is reserved for padding so that
every sequence model can use one embedding table with `padding_idx=0`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Split = Literal["valid", "test"]

_ITEMS_SQL = "select item_id from marts.item_catalog where dataset = ? and in_interactions"
_SEQUENCES_SQL = """
select user_id, train_item_ids, valid_item_id, test_item_id
from marts.user_sequences
where dataset = ?
"""


@dataclass(frozen=True)
class SequenceData:
    """Users' chronological training sequences and their validation and test targets, as item indices."""

    dataset: str
    item_ids: list[str]  # vocabulary: index i + 1 <-> item_ids[i]; 0 is padding
    user_ids: list[str]  # sorted; row u of every per-user field below
    train: list[np.ndarray]  # int64 item indices per user, oldest first
    valid_targets: np.ndarray  # (n_users,) int64
    test_targets: np.ndarray  # (n_users,) int64

    @property
    def n_items(self) -> int:
        """Number of real items (indices 1..n_items)."""
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_ids)

    def user_ids_digest(self) -> str:
        """sha256 of the user ids in row order: a model that keeps a vector per user row checks it before use."""
        return hashlib.sha256("\n".join(self.user_ids).encode()).hexdigest()[:16]

    def history(self, split: Split) -> tuple[list[np.ndarray], np.ndarray]:
        """Input histories and targets for evaluating `split`: valid sees train, test sees train + valid."""
        if split == "valid":
            return self.train, self.valid_targets
        if split == "test":
            histories = [np.append(seq, target) for seq, target in zip(self.train, self.valid_targets, strict=True)]
            return histories, self.test_targets
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")


def _indices(column: pa.ChunkedArray | pa.Array, vocabulary: pa.Array, what: str) -> np.ndarray:
    """Item ids -> 1-based vocabulary indices; a ValueError names the first ids not in the vocabulary."""
    # The value set must have the column's exact string type (DuckDB may hand out large or view strings).
    positions = pc.index_in(column, value_set=vocabulary.cast(column.type))
    if positions.null_count:
        unknown = pc.filter(column, pc.is_null(positions))
        examples = unknown.to_pylist()[:5]
        raise ValueError(f"{positions.null_count} {what} not in the item vocabulary (in_interactions), e.g. {examples}")
    return positions.to_numpy(zero_copy_only=False).astype(np.int64) + 1


def load_sequences(con: duckdb.DuckDBPyConnection, dataset: str) -> SequenceData:
    """Read one dataset's leave-one-out sequences and item vocabulary from the marts."""
    item_ids = sorted(row[0] for row in con.execute(_ITEMS_SQL, [dataset]).fetchall())
    if len(set(item_ids)) != len(item_ids):
        raise ValueError(f"marts.item_catalog has duplicate item ids for dataset {dataset!r}")
    table = con.execute(_SEQUENCES_SQL, [dataset]).to_arrow_table()
    if table.num_rows == 0:
        raise ValueError(f"marts.user_sequences has no rows for dataset {dataset!r}")
    # Sort in Python, not SQL, so users and items follow the same (code point) order everywhere.
    table = table.take(pc.sort_indices(table, sort_keys=[("user_id", "ascending")]))
    for column in ("valid_item_id", "test_item_id", "train_item_ids"):
        if table.column(column).null_count:
            raise ValueError(f"marts.user_sequences.{column} is null for some users of dataset {dataset!r}")
    vocabulary = pa.array(item_ids, type=pa.string())

    # Map every training item at once through the flat list buffer, then cut it back into users.
    train_lists = table.column("train_item_ids").combine_chunks()
    lengths = pc.list_value_length(train_lists).to_numpy(zero_copy_only=False)
    if (lengths == 0).any():
        raise ValueError(f"{int((lengths == 0).sum())} users of dataset {dataset!r} have no training items")
    flat = _indices(train_lists.flatten(), vocabulary, "training items")
    train = np.split(flat, np.cumsum(lengths)[:-1])

    user_ids = table.column("user_id").to_pylist()
    if len(set(user_ids)) != len(user_ids):
        raise ValueError(f"marts.user_sequences has duplicate user ids for dataset {dataset!r}")
    return SequenceData(
        dataset=dataset,
        item_ids=item_ids,
        user_ids=user_ids,
        train=train,
        valid_targets=_indices(table.column("valid_item_id"), vocabulary, "validation items"),
        test_targets=_indices(table.column("test_item_id"), vocabulary, "test items"),
    )
