"""Tiny real datasets for tests: slices of the shipped movielens-100k log, with and without timestamps.

The slices keep whole users (every `every`-th user id, their first `per_user` ratings in file order,
which is time order), so the 5-core survives and the sequences are real ones. The timestamp-less
slice drops the timestamp and the rating and ships no item catalog: the log has only user and item
ids, in file order, the barest log a registry entry can describe.
"""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from pathlib import Path

import yaml

from orchestration.paths import PROJECT_ROOT

MOVIELENS = PROJECT_ROOT / "data" / "raw" / "movielens-100k"
SHIPPED_REGISTRY = PROJECT_ROOT / "datasets.yaml"


def _movielens_rows(every: int, offset: int, per_user: int) -> list[dict[str, str]]:
    """The first `per_user` ratings (file order) of every user whose id is `offset` modulo `every`."""
    kept: list[dict[str, str]] = []
    seen: dict[str, int] = defaultdict(int)
    with (MOVIELENS / "ratings.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            user = row["user_id"]
            if int(user) % every == offset and seen[user] < per_user:
                seen[user] += 1
                kept.append(row)
    return kept


def write_timestampless_slice(raw_dir: Path, name: str, every: int = 4, offset: int = 0,
                              per_user: int = 40) -> dict:
    """Write `raw_dir/name/events.csv` (user_id, item_id; no timestamp, rating or catalog); its registry entry."""
    folder = raw_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "events.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id"])
        writer.writerows([row["user_id"], row["item_id"]] for row in _movielens_rows(every, offset, per_user))
    return {"description": "movielens-100k slice without timestamps, ratings or item text (tests)",
            "events": {"path": str(folder / "events.csv"), "format": "csv",
                       "columns": {"user_id": "user_id", "item_id": "item_id"}}}


def write_timestamped_slice(raw_dir: Path, name: str, every: int = 4, offset: int = 1,
                            per_user: int = 40) -> dict:
    """Write `raw_dir/name/` (ratings with timestamps, the movie catalog); its registry entry."""
    folder = raw_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = _movielens_rows(every, offset, per_user)
    with (folder / "ratings.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shutil.copy(MOVIELENS / "movies.csv", folder / "movies.csv")
    shipped = yaml.safe_load(SHIPPED_REGISTRY.read_text())["datasets"]["movielens-100k"]
    entry = {**shipped, "description": "movielens-100k slice with timestamps, ratings and titles (tests)"}
    entry["events"] = {**shipped["events"], "path": str(folder / "ratings.csv")}
    entry["items"] = {**shipped["items"], "path": str(folder / "movies.csv")}
    return entry


def write_registry(path: Path, datasets: dict[str, dict], default: str | None = None) -> Path:
    """A registry file of these entries (absolute paths, so it may live anywhere)."""
    document = {"default_dataset": default or next(iter(datasets)), "allow_paths_outside_raw_dir": True,
                "datasets": datasets}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def shipped_entries() -> dict[str, dict]:
    """The shipped registry's entries, their paths made absolute."""
    entries = yaml.safe_load(SHIPPED_REGISTRY.read_text())["datasets"]
    for entry in entries.values():
        for source in ("events", "items"):
            if source in entry:
                entry[source] = {**entry[source], "path": str(PROJECT_ROOT / entry[source]["path"])}
    return entries
