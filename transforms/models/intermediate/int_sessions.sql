{{ config(materialized='incremental') }}

{#- Gaps compare in integer milliseconds: exact at the boundary whatever the log's unit (s or ms). -#}
{% set gap_ms = (var('session_gap_minutes') * 60000) | round | int %}

with interactions as (

    select * from {{ ref('int_interactions_filtered') }}

),

in_ms as (

    -- timestamp_s holds ms logs divided by 1000; rounding back recovers their exact integers.
    select *, round(timestamp_s * 1000)::bigint as timestamp_ms from interactions

),

with_previous as (

    select
        *,
        lag(timestamp_ms) over (
            partition by user_id order by timestamp_s, event_order, ingest_order
        ) as previous_timestamp_ms
    from in_ms

),

flagged as (

    -- A session starts at a user's first event and after any gap strictly longer than the limit;
    -- events with equal timestamps always share a session. A log without timestamps has no
    -- sessions: every session column stays NULL.
    select
        *,
        case
            when timestamp_ms is null then null
            when previous_timestamp_ms is null then 1
            when timestamp_ms - previous_timestamp_ms > {{ gap_ms }} then 1
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
    case when session_number is not null then row_number() over (
        partition by user_id, session_number order by timestamp_s, event_order, ingest_order
    ) end as position_in_session,
    case when session_number is not null then count(*) over (partition by user_id, session_number)
    end as session_length
from numbered
