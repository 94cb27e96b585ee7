{{ config(materialized='dataset_partitioned') }}

{#- Gaps compare in integer milliseconds: exact at the boundary whatever the log's unit (s or ms). -#}
{% set gap_ms = (var('session_gap_minutes') * 60000) | round | int %}

with interactions as (

    select * from {{ ref('int_interactions_filtered') }}

),

keys as (

    -- The windows sort these narrow keys only; the payload (review text included) joins back once.
    -- timestamp_s holds ms logs divided by 1000; rounding back recovers their exact integers.
    select ingest_order, user_id, timestamp_s, event_order, round(timestamp_s * 1000)::bigint as timestamp_ms
    from interactions

),

flagged as (

    -- A session starts at a user's first event and after any gap strictly longer than the limit;
    -- events with equal timestamps always share a session. A log without timestamps has no
    -- sessions: every session column stays NULL.
    select
        ingest_order,
        user_id,
        timestamp_s,
        event_order,
        case
            when timestamp_ms is null then null
            when lag(timestamp_ms) over by_time is null then 1
            when timestamp_ms - lag(timestamp_ms) over by_time > {{ gap_ms }} then 1
            else 0
        end as is_session_start,
        row_number() over by_time as user_position
    from keys
    window by_time as (partition by user_id order by timestamp_s, event_order, ingest_order)

),

numbered as (

    -- One running window (one sort) gives both the session number and where the session began.
    select
        ingest_order,
        user_id,
        user_position,
        sum(is_session_start) over running as session_number,
        max(case when is_session_start = 1 then user_position end) over running as session_first_position
    from flagged
    window running as (
        partition by user_id order by timestamp_s, event_order, ingest_order
        rows between unbounded preceding and current row
    )

),

sessions as (

    select
        ingest_order,
        session_number,
        user_position - session_first_position + 1 as position_in_session,
        count(*) over (partition by user_id, session_number) as session_length
    from numbered

)

select
    interactions.dataset,
    interactions.user_id,
    interactions.item_id,
    interactions.event_id,
    interactions.event_order,
    interactions.ingest_order,
    interactions.timestamp_s,
    interactions.event_at,
    interactions.event_type,
    interactions.rating,
    interactions.review_text,
    interactions.user_id || '#' || sessions.session_number as session_id,
    sessions.session_number,
    sessions.position_in_session,
    case when sessions.session_number is not null then sessions.session_length end as session_length
from interactions
inner join sessions using (ingest_order)
