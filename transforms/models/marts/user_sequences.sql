with interactions as (

    select * from {{ this_dataset(ref('interactions')) }}

),

sequences as (

    -- Plain (unordered) list aggregates, sorted per user afterwards: DuckDB's ORDER BY inside an
    -- aggregate buffers rows per group, and with hundreds of thousands of short sequences that
    -- outgrew 7 GB on a 10M-event log; these lists cost about the data's own size.
    select
        dataset,
        user_id,
        list_sort(list({'position': sequence_position, 'item_id': item_id, 'timestamp_s': timestamp_s}))
            as ordered,
        -- NULL, not 0, for a log without timestamps (sessions unknown); list_distinct drops NULLs.
        nullif(len(list_distinct(list(session_id))), 0) as n_sessions
    from interactions
    group by dataset, user_id

),

unpacked as (

    select
        dataset,
        user_id,
        [event.item_id for event in ordered] as item_ids,
        [event.timestamp_s for event in ordered] as timestamps_s,
        n_sessions
    from sequences

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
from unpacked
