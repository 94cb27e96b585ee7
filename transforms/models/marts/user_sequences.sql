with interactions as (

    select * from {{ this_dataset(ref('interactions')) }}

)

select
    dataset,
    user_id,
    count(*) as sequence_length,
    list(item_id order by sequence_position) as item_ids,
    list(timestamp_s order by sequence_position) as timestamps_s,
    list(item_id order by sequence_position) filter (where split = 'train') as train_item_ids,
    max(item_id) filter (where split = 'valid') as valid_item_id,
    max(item_id) filter (where split = 'test') as test_item_id,
    count(distinct session_id) as n_sessions
from interactions
group by dataset, user_id
