{#-
  A table, not a view: the dedup window (a sort of the whole log) runs once per build instead of
  once for every model and test that reads staging. Partitioned like the marts: the pre-hook
  deletes this dataset's rows, then its new rows are inserted.
-#}
{{ config(materialized='dataset_partitioned', pre_hook="{{ delete_dataset_partition() }}") }}

with source as (

    select * from {{ source('raw', 'events') }}
    where dataset = {{ dataset_literal() }}

),

first_copies as (

    -- An exact duplicate repeats every field of an earlier event; only the first copy (lowest line)
    -- is kept. A hash aggregation, not a window: no sort of the whole log.
    select
        user_id,
        item_id,
        event_id,
        timestamp_s,
        event_type,
        rating,
        review_text,
        min(ingest_order) as ingest_order
    from source
    group by user_id, item_id, event_id, timestamp_s, event_type, rating, review_text

)

select
    {{ dataset_literal() }} as dataset,
    user_id,
    item_id,
    event_id,
    -- Order within equal timestamps: the log's event id when it has one, else its line order.
    coalesce(event_id, ingest_order) as event_order,
    ingest_order,
    timestamp_s,
    to_timestamp(timestamp_s) as event_at,
    event_type,
    rating,
    review_text
from first_copies
