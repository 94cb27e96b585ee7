"""The DuckDB profile cache: hits, misses on a changed prompt or model, retries, and batch commits."""

from pathlib import Path

import duckdb
import pytest

from ml.profiles.cache import (
    PROFILE_TABLE,
    ProfileKey,
    ProfileResult,
    current_profiles,
    ensure_profile_table,
    pending_keys,
    store_results,
)
from ml.profiles.parsing import Profile, ProfileFailure

KEYS = [ProfileKey(f"i{n}", f"hash{n}") for n in range(5)]


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(tmp_path / "cache.duckdb"))
    ensure_profile_table(connection)
    return connection


def _ok(key: ProfileKey) -> ProfileResult:
    return ProfileResult(key, Profile(f"profile of {key.entity_id}", "r", False), "{...}")


def test_only_new_or_changed_entities_are_pending(con: duckdb.DuckDBPyConnection) -> None:
    assert pending_keys(con, "d", "item", "m1", KEYS) == KEYS
    store_results(con, "d", "item", "m1", [_ok(key) for key in KEYS[:3]])
    assert pending_keys(con, "d", "item", "m1", KEYS) == KEYS[3:]
    changed = [ProfileKey("i0", "new-hash"), *KEYS[1:]]
    assert pending_keys(con, "d", "item", "m1", changed) == [changed[0], *KEYS[3:]]
    assert pending_keys(con, "d", "item", "m2", KEYS) == KEYS  # another model
    assert pending_keys(con, "other", "item", "m1", KEYS) == KEYS  # another dataset
    assert current_profiles(con, "d", "item", "m1", changed) == {"i1": "profile of i1", "i2": "profile of i2"}


def test_failures_are_recorded_and_retried(con: duckdb.DuckDBPyConnection) -> None:
    store_results(con, "d", "user", "m", [ProfileResult(KEYS[0], ProfileFailure("unrepairable JSON"), "{{{")])
    row = con.execute(f"select status, failure_reason, raw_output, attempts from {PROFILE_TABLE}").fetchone()
    assert row == ("failed", "unrepairable JSON", "{{{", 1)
    assert pending_keys(con, "d", "user", "m", KEYS[:1]) == KEYS[:1]
    store_results(con, "d", "user", "m", [_ok(KEYS[0])])
    assert con.execute(f"select status, attempts from {PROFILE_TABLE}").fetchall() == [("ok", 2)]
    assert pending_keys(con, "d", "user", "m", KEYS[:1]) == []


def test_a_committed_batch_survives_a_failed_later_one(con: duckdb.DuckDBPyConnection) -> None:
    store_results(con, "d", "item", "m", [_ok(key) for key in KEYS[:2]])
    broken = ProfileResult(ProfileKey(None, "h"), Profile("x", "", False), "")  # type: ignore[arg-type]
    with pytest.raises(duckdb.ConstraintException):
        store_results(con, "d", "item", "m", [_ok(KEYS[2]), broken])
    assert pending_keys(con, "d", "item", "m", KEYS) == KEYS[2:]
