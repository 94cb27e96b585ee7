"""Iterative k-core to the true fixed point, as a dbt-duckdb Python model.

A loop that keeps only the current edge set: each pass deletes, simultaneously, every interaction of
a user or item with fewer than k interactions, and the loop ends with the first pass that deletes
nothing (the k-core is unique, so simultaneous rounds give the same result as any order). A
recursive CTE would keep every pass's rows (P x the log) and rescan them; this is the direct SQL's
loop, on a narrow temp table of (ingest_order, user_id, item_id). If a pass deletes everything, the
next one deletes nothing and the k-core is empty.
"""

import re

import duckdb

EDGES = "kcore_edges"
DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # the dataset_var() macro's rule


def kcore_fixed_point(con: duckdb.DuckDBPyConnection, edges: str, k: int) -> int:
    """Delete from table `edges` until every user and item has >= k rows; return the passes, the last one included."""
    passes = 0
    while True:
        passes += 1
        deleted = con.execute(
            f"""
            delete from {edges}
            where user_id in (select user_id from {edges} group by user_id having count(*) < {k})
               or item_id in (select item_id from {edges} group by item_id having count(*) < {k})
            """
        ).fetchone()
        if not deleted or deleted[0] == 0:
            return passes


def model(dbt, session: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
    """The dataset's interactions that survive the k-core, with the number of passes it took."""
    dbt.config(materialized="incremental")
    dataset = str(dbt.config.get("dataset"))
    if not DATASET_NAME.match(dataset):
        raise ValueError(f"dbt var 'dataset' is not a valid dataset name: {dataset!r}")
    k = int(dbt.config.get("k_core"))
    sessions = dbt.ref("int_sessions").filter(f"dataset = '{dataset}'")
    session.execute(f"create or replace temp table {EDGES} as "
                    f"select ingest_order, user_id, item_id from ({sessions.sql_query()})")
    passes = kcore_fixed_point(session, EDGES, k)
    # Degree-counting passes, the last one finding nothing to remove.
    return session.sql(f"select interactions.*, {passes}::integer as kcore_passes "
                       f"from ({sessions.sql_query()}) as interactions "
                       f"semi join {EDGES} using (ingest_order)")
