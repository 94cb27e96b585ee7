"""The profile cache in DuckDB, keyed by (dataset, entity, prompt hash, model id).

A profile is reused while its prompt and model are unchanged; a changed prompt (new training
reviews, a new prompt version) or another model makes it pending again. Failed generations are
stored with their reason and raw output and count as pending, so the next run retries them.
Results are written in batches, each batch its own transaction, so a run killed midway keeps
everything finished before the kill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from ml.data.warehouse import transaction
from ml.profiles.parsing import Profile, ProfileFailure

PROFILE_SCHEMA = "enrichment"
PROFILE_TABLE = f"{PROFILE_SCHEMA}.llm_profiles"

PROFILE_DDL = f"""
create table if not exists {PROFILE_TABLE} (
    dataset varchar not null,
    entity_kind varchar not null,      -- 'item' or 'user'
    entity_id varchar not null,
    prompt_hash varchar not null,
    model_id varchar not null,
    status varchar not null,           -- 'ok' or 'failed'
    summarization varchar,
    reasoning varchar,
    failure_reason varchar,
    raw_output varchar,
    attempts integer not null,
    generated_at timestamp not null default current_timestamp
)
"""


@dataclass(frozen=True)
class ProfileKey:
    """Identifies one profile: which entity, from which prompt, by which model."""

    entity_id: str
    prompt_hash: str


@dataclass(frozen=True)
class ProfileResult:
    """One generation's outcome, ready to store."""

    key: ProfileKey
    outcome: Profile | ProfileFailure
    raw_output: str


def ensure_profile_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create the profile cache table if it does not exist."""
    con.execute(f"create schema if not exists {PROFILE_SCHEMA}")
    con.execute(PROFILE_DDL)


def pending_keys(
    con: duckdb.DuckDBPyConnection, dataset: str, kind: str, model_id: str, keys: Sequence[ProfileKey]
) -> list[ProfileKey]:
    """The keys (in the given order) that have no successful profile for this prompt and model yet."""
    if not keys:
        return []
    done = {
        row[0]
        for row in con.execute(
            f"""
            select c.entity_id || chr(0) || c.prompt_hash
            from {PROFILE_TABLE} c
            where c.dataset = $dataset and c.entity_kind = $kind and c.model_id = $model and c.status = 'ok'
            """,
            {"dataset": dataset, "kind": kind, "model": model_id},
        ).fetchall()
    }
    return [key for key in keys if f"{key.entity_id}\0{key.prompt_hash}" not in done]


def store_results(
    con: duckdb.DuckDBPyConnection, dataset: str, kind: str, model_id: str, results: Sequence[ProfileResult]
) -> None:
    """Store one batch of outcomes in one transaction, replacing earlier rows for the same keys."""
    if not results:
        return
    rows = [
        (
            dataset, kind, result.key.entity_id, result.key.prompt_hash, model_id,
            "ok" if isinstance(result.outcome, Profile) else "failed",
            result.outcome.summarization if isinstance(result.outcome, Profile) else None,
            result.outcome.reasoning if isinstance(result.outcome, Profile) else None,
            result.outcome.reason if isinstance(result.outcome, ProfileFailure) else None,
            result.raw_output,
        )
        for result in results
    ]
    with transaction(con):
        con.execute(
            "create or replace temp table _profile_batch (dataset varchar, entity_kind varchar, entity_id varchar, "
            "prompt_hash varchar, model_id varchar, status varchar, summarization varchar, reasoning varchar, "
            "failure_reason varchar, raw_output varchar)"
        )
        con.executemany("insert into _profile_batch values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute(
            f"""
            create or replace temp table _profile_attempts as
            select b.*, coalesce(p.attempts, 0) + 1 as attempts
            from _profile_batch b
            left join {PROFILE_TABLE} p using (dataset, entity_kind, entity_id, prompt_hash, model_id)
            """
        )
        con.execute(
            f"""
            delete from {PROFILE_TABLE} p
            using _profile_batch b
            where p.dataset = b.dataset and p.entity_kind = b.entity_kind and p.entity_id = b.entity_id
              and p.prompt_hash = b.prompt_hash and p.model_id = b.model_id
            """
        )
        con.execute(
            f"""
            insert into {PROFILE_TABLE} (dataset, entity_kind, entity_id, prompt_hash, model_id, status,
                summarization, reasoning, failure_reason, raw_output, attempts)
            select dataset, entity_kind, entity_id, prompt_hash, model_id, status, summarization, reasoning,
                failure_reason, raw_output, attempts
            from _profile_attempts
            """
        )
        con.execute("drop table _profile_batch")
        con.execute("drop table _profile_attempts")


def current_profiles(
    con: duckdb.DuckDBPyConnection, dataset: str, kind: str, model_id: str, keys: Sequence[ProfileKey]
) -> dict[str, str]:
    """Entity id -> summarization, for the keys that have a successful profile of exactly that prompt."""
    wanted = {(key.entity_id, key.prompt_hash) for key in keys}
    rows = con.execute(
        f"""
        select entity_id, prompt_hash, summarization from {PROFILE_TABLE}
        where dataset = $dataset and entity_kind = $kind and model_id = $model and status = 'ok'
        """,
        {"dataset": dataset, "kind": kind, "model": model_id},
    ).fetchall()
    return {entity: summary for entity, prompt_hash, summary in rows if (entity, prompt_hash) in wanted}
