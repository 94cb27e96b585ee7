"""Read what the profile prompts need from the warehouse: item facts and training interactions only.

The query itself filters on `split = 'train'`, and `train_only` checks again in the prompt
builders, so a validation or test interaction cannot reach a prompt by either path.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

import duckdb

from ml.profiles.prompts import Interaction, ItemFacts


@dataclass(frozen=True)
class ProfileInputs:
    """One dataset's prompt material: item facts, and training interactions grouped by item and by user."""

    items: dict[str, ItemFacts]
    item_popularity: dict[str, int]
    train_by_item: dict[str, list[Interaction]]
    train_by_user: dict[str, list[Interaction]]

    def items_by_popularity(self) -> list[str]:
        """Item ids, most training interactions first (ties by id): the order a budget spends in."""
        return sorted(self.items, key=lambda item: (-self.item_popularity.get(item, 0), item))


def load_profile_inputs(con: duckdb.DuckDBPyConnection, dataset: str) -> ProfileInputs:
    """Item facts of the interacted items, and every training interaction of `dataset`."""
    items = {
        item_id: ItemFacts(
            item_id, title=title, description=description, brand=brand, categories=tuple(categories or ()),
            attributes={str(k): str(v) for k, v in json.loads(attributes).items()} if attributes else {},
        )
        for item_id, title, description, brand, categories, attributes in con.execute(
            "select item_id, title, description, brand, categories, attributes from marts.item_catalog "
            "where dataset = $dataset and in_interactions order by item_id",
            {"dataset": dataset},
        ).fetchall()
    }
    by_item: dict[str, list[Interaction]] = defaultdict(list)
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    rows = con.execute(
        "select user_id, item_id, split, sequence_position, review_text from marts.interactions "
        "where dataset = $dataset and split = 'train' order by user_id, sequence_position",
        {"dataset": dataset},
    ).fetchall()
    for user_id, item_id, split, position, review in rows:
        row = Interaction(user_id, item_id, split, int(position), review)
        by_item[item_id].append(row)
        by_user[user_id].append(row)
    return ProfileInputs(
        items=items, item_popularity={item: len(rows) for item, rows in by_item.items()},
        train_by_item=dict(by_item), train_by_user=dict(by_user),
    )
