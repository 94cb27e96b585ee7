{{ config(materialized='incremental') }}

{#
  Iterative k-core to the true fixed point. Each pass removes, simultaneously, every interaction of
  a user or item with fewer than k interactions in the previous pass; the recursion emits a new pass
  only while the previous one still had such a user or item, so it stops exactly at the fixed point
  (the k-core is unique, so removing in simultaneous rounds gives the same result as any order).
  If a pass removes everything, the recursion also stops; the final select then returns no rows.
#}
{% set k = var('k_core') | int %}

with recursive

interactions as (

    select * from {{ this_dataset(ref('int_sessions')) }}

),

passes (pass, ingest_order, user_id, item_id) as (

    select 0, ingest_order, user_id, item_id from interactions

    union all

    select pass + 1, ingest_order, user_id, item_id
    from (
        select
            pass,
            ingest_order,
            user_id,
            item_id,
            count(*) over (partition by user_id) as user_degree,
            count(*) over (partition by item_id) as item_degree
        from passes
    ) as degrees
    qualify min(least(user_degree, item_degree)) over () < {{ k }}
        and user_degree >= {{ k }}
        and item_degree >= {{ k }}

),

last_pass as (

    select * from passes where pass = (select max(pass) from passes)

),

last_pass_degrees as (

    select
        *,
        count(*) over (partition by user_id) as user_degree,
        count(*) over (partition by item_id) as item_degree
    from last_pass

),

fixed_point as (

    -- The last pass is the k-core unless it still violates k (then the k-core is empty).
    select ingest_order, pass
    from last_pass_degrees
    where (select min(least(user_degree, item_degree)) from last_pass_degrees) >= {{ k }}

)

select
    interactions.*,
    -- Degree-counting passes, the last one finding nothing to remove.
    fixed_point.pass + 1 as kcore_passes
from interactions
inner join fixed_point using (ingest_order)
