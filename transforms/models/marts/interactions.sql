{% set min_length = var('min_sequence_length') | int %}

with kcore as (

    select * from {{ this_dataset(ref('int_kcore_interactions')) }}

),

ordered as (

    select
        *,
        row_number() over (
            partition by user_id order by timestamp_s, event_order, ingest_order
        ) as sequence_position,
        count(*) over (partition by user_id) as sequence_length
    from kcore

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
from ordered
-- Users too short for train + validation + test are left out; dataset_stats counts them.
where sequence_length >= {{ min_length }}
