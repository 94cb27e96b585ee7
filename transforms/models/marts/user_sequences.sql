with interactions as (

    select * from {{ this_dataset(ref('interactions')) }}

),

sequences as (

    select
        dataset,
        user_id,
        list(item_id order by sequence_position) as item_ids,
        list(timestamp_s order by sequence_position) as timestamps_s,
        -- NULL, not 0, for a log without timestamps (sessions unknown).
        nullif(count(distinct session_id), 0) as n_sessions
    from interactions
    group by dataset, user_id

)

-- The split is positional (see interactions.split): slicing the one ordered list is cheaper than
-- aggregating each split separately.
select
    dataset,
    user_id,
    len(item_ids) as sequence_length,
    item_ids,
    timestamps_s,
    item_ids[1:len(item_ids) - 2] as train_item_ids,
    item_ids[len(item_ids) - 1] as valid_item_id,
    item_ids[len(item_ids)] as test_item_id,
    n_sessions
from sequences
