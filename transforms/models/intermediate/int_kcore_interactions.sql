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

    -- Degrees by hash aggregation (much faster here than window functions over string keys).
    select passes.pass + 1, passes.ingest_order, passes.user_id, passes.item_id
    from passes
    inner join (select user_id, count(*) as degree from passes group by user_id) as users using (user_id)
    inner join (select item_id, count(*) as degree from passes group by item_id) as items using (item_id)
    where users.degree >= {{ k }}
      and items.degree >= {{ k }}
      and exists (
          select 1 from passes group by user_id having count(*) < {{ k }}
          union all
          select 1 from passes group by item_id having count(*) < {{ k }}
      )

),

last_pass as (

    select * from passes where pass = (select max(pass) from passes)

),

fixed_point as (

    -- The last pass is the k-core unless it still violates k (then the k-core is empty).
    select ingest_order, pass
    from last_pass
    where not exists (
        select 1 from last_pass group by user_id having count(*) < {{ k }}
        union all
        select 1 from last_pass group by item_id having count(*) < {{ k }}
    )

)

select
    interactions.*,
    -- Degree-counting passes, the last one finding nothing to remove.
    fixed_point.pass + 1 as kcore_passes
from interactions
inner join fixed_point using (ingest_order)
