{#
  Iterative k-core to the true fixed point, as a loop of DELETE passes on a table of the current edges
  (ingest_order, user_id, item_id): each pass deletes, simultaneously, every edge of a user or item
  with fewer than k edges, and the loop ends with the first pass that deletes nothing (the k-core is
  unique, so simultaneous passes give the same result as any order). A recursive CTE would keep every
  pass's rows (passes x the log) and rescan them; this keeps only the current edge set, as hand-written
  DuckDB does. Returns the passes, the last (empty) one included. If a pass deletes everything, the
  next deletes nothing and the k-core is empty.
#}
{% macro kcore_fixed_point(edges, k, max_passes=10000) %}
    {%- set state = namespace(passes=0, done=false) -%}
    {%- for _ in range(max_passes) -%}
        {%- if not state.done -%}
            {%- set state.passes = state.passes + 1 -%}
            {%- set deleted = run_query(
                "delete from " ~ edges
                ~ " where user_id in (select user_id from " ~ edges ~ " group by user_id having count(*) < " ~ k ~ ")"
                ~ " or item_id in (select item_id from " ~ edges ~ " group by item_id having count(*) < " ~ k ~ ")") -%}
            {%- do log("k-core pass " ~ state.passes ~ " removed " ~ deleted.rows[0][0] ~ " rows", info=True) -%}
            {%- if deleted.rows[0][0] == 0 -%}
                {%- set state.done = true -%}
            {%- endif -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if not state.done -%}
        {{ exceptions.raise_compiler_error("the k-core did not reach its fixed point in " ~ max_passes ~ " passes") }}
    {%- endif -%}
    {{- return(state.passes) -}}
{% endmacro %}

{#
  Pre-hook of int_kcore_interactions: the dataset's edges into temp table kcore_edges, peeled to the
  k-core, and the pass count into temp table kcore_passes, both read by the model's query.
#}
{% macro build_kcore_edges(interactions, k) %}
    {%- if execute -%}
        {%- do run_query("create or replace temp table kcore_edges as "
                         ~ "select ingest_order, user_id, item_id from " ~ interactions) -%}
        {%- set passes = kcore_fixed_point("kcore_edges", k | int) -%}
        {%- do run_query("create or replace temp table kcore_passes as select " ~ passes ~ "::integer as passes") -%}
    {%- endif -%}
    select 1
{% endmacro %}

{# Post-hook of int_kcore_interactions: drop the temp tables of its pre-hook. #}
{% macro drop_kcore_edges() %}
    drop table if exists kcore_edges;
    drop table if exists kcore_passes
{% endmacro %}
