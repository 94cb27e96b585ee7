{% set min_length = var('min_sequence_length') | int %}

with kcore as (

    select * from {{ this_dataset(ref('int_kcore_interactions')) }}

),

ordered as (

    -- One sort of narrow keys gives both the position and the length (the whole-partition frame);
    -- the payload joins back once.
    select
        ingest_order,
        row_number() over by_time as sequence_position,
        count(*) over (
            partition by user_id order by timestamp_s, event_order, ingest_order
            rows between unbounded preceding and unbounded following
        ) as sequence_length
    from kcore
    window by_time as (partition by user_id order by timestamp_s, event_order, ingest_order)

),

positioned as (

    select kcore.*, ordered.sequence_position, ordered.sequence_length
    from kcore
    inner join ordered using (ingest_order)

)

select
    dataset,
    user_id,
    item_id,
    sequence_position,
    sequence_length,
    -- Leave-one-out: the last interaction is the test target, the second last the validation target.
    case
        when sequence_position = sequence_length then 'test'
        when sequence_position = sequence_length - 1 then 'valid'
        else 'train'
    end as split,
    timestamp_s,
    event_at,
    event_order,
    event_id,
    ingest_order,
    event_type,
    rating,
    review_text,
    session_id,
    position_in_session,
    session_length
from positioned
-- Users too short for train + validation + test are left out; dataset_stats counts them.
where sequence_length >= {{ min_length }}
