{{ config(materialized='incremental') }}

{% set gap_seconds = var('session_gap_minutes') * 60 %}

with interactions as (

    select * from {{ ref('int_interactions_filtered') }}

),

with_previous as (

    select
        *,
        lag(timestamp_s) over (
            partition by user_id order by timestamp_s, event_order, ingest_order
        ) as previous_timestamp_s
    from interactions

),

flagged as (

    -- A session starts at a user's first event and after any gap strictly longer than the limit;
    -- events with equal timestamps always share a session.
    select
        *,
        case
            when previous_timestamp_s is null then 1
            when timestamp_s - previous_timestamp_s > {{ gap_seconds }} then 1
            else 0
        end as is_session_start
    from with_previous

),

numbered as (

    select
        *,
        sum(is_session_start) over (
            partition by user_id order by timestamp_s, event_order, ingest_order
            rows between unbounded preceding and current row
        ) as session_number
    from flagged

)

select
    dataset,
    user_id,
    item_id,
    event_id,
    event_order,
    ingest_order,
    timestamp_s,
    event_at,
    event_type,
    rating,
    review_text,
    user_id || '#' || session_number as session_id,
    session_number,
    row_number() over (
        partition by user_id, session_number order by timestamp_s, event_order, ingest_order
    ) as position_in_session,
    count(*) over (partition by user_id, session_number) as session_length
from numbered
