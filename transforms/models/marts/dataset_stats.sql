{#
  Every count on the way from raw lines to the leave-one-out split, so each row lost on the way is
  accounted for: raw lines = loaded + quarantined; loaded = staged + duplicates; staged = interactions
  + below min rating; interactions = k-core + removed by k-core; k-core = split + short users' rows.
#}
with raw_events as (

    select count(*) as n from {{ source('raw', 'events') }} where dataset = {{ dataset_literal() }}

),

quarantine as (

    select
        count(*) filter (where source_kind = 'events') as events_quarantined,
        count(*) filter (where source_kind = 'items') as items_quarantined
    from {{ source('raw', 'quarantine') }}
    where dataset = {{ dataset_literal() }}

),

staged as (

    select count(*) as n from {{ this_dataset(ref('stg_events')) }}

),

filtered as (

    select
        count(*) as n_interactions,
        count(distinct user_id) as n_users,
        count(distinct item_id) as n_items
    from {{ ref('int_interactions_filtered') }}

),

kcore as (

    select
        count(*) as n_interactions,
        count(distinct user_id) as n_users,
        count(distinct item_id) as n_items,
        coalesce(max(kcore_passes), 0) as passes
    from {{ this_dataset(ref('int_kcore_interactions')) }}

),

split as (

    -- Users and sessions come from user_sequences (one row per user, its distinct sessions counted):
    -- session ids embed the user id, so their distinct count is the sum of the users' counts, and
    -- counting 10M session strings again here would be the slowest step of the build.
    select
        count(*) as n_interactions,
        count(distinct item_id) as n_items,
        count(*) filter (where split = 'train') as n_train,
        count(*) filter (where split = 'valid') as n_valid,
        count(*) filter (where split = 'test') as n_test,
        min(timestamp_s) as min_timestamp_s,
        max(timestamp_s) as max_timestamp_s
    from {{ this_dataset(ref('interactions')) }}

),

lengths as (

    select
        count(*) as n_users,
        sum(n_sessions) as n_sessions,  -- NULL: a log without timestamps (every user's count is NULL)
        min(sequence_length) as seq_len_min,
        quantile_cont(sequence_length, 0.25) as seq_len_p25,
        quantile_cont(sequence_length, 0.50) as seq_len_p50,
        quantile_cont(sequence_length, 0.75) as seq_len_p75,
        quantile_cont(sequence_length, 0.90) as seq_len_p90,
        quantile_cont(sequence_length, 0.99) as seq_len_p99,
        max(sequence_length) as seq_len_max,
        avg(sequence_length) as seq_len_mean,
        avg(n_sessions) as sessions_per_user_mean
    from {{ this_dataset(ref('user_sequences')) }}

),

catalog as (

    select
        count(*) as n_catalog_items,
        count(*) filter (where item_text_source = 'item_id') as n_items_without_text
    from {{ this_dataset(ref('item_catalog')) }}
    where in_interactions

)

select
    {{ dataset_literal() }} as dataset,
    {{ var('k_core') }} as k_core,
    {{ var('session_gap_minutes') }} as session_gap_minutes,
    {{ var('min_rating') if var('min_rating') is not none else 'null' }}::double as min_rating,
    raw_events.n + quarantine.events_quarantined as raw_event_lines,
    raw_events.n as events_loaded,
    quarantine.events_quarantined,
    quarantine.items_quarantined,
    raw_events.n - staged.n as duplicate_events_removed,
    staged.n - filtered.n_interactions as events_below_min_rating,
    filtered.n_interactions as interactions_before_kcore,
    filtered.n_users as users_before_kcore,
    filtered.n_items as items_before_kcore,
    kcore.passes as kcore_passes,
    kcore.n_users - lengths.n_users as users_excluded_short,
    kcore.n_interactions - split.n_interactions as interactions_excluded_short,
    lengths.n_users as users,
    split.n_items as items,
    split.n_interactions as interactions,
    case when lengths.n_users * split.n_items > 0
        then split.n_interactions / (lengths.n_users * split.n_items)::double end as density,
    split.n_train as train_interactions,
    split.n_valid as valid_interactions,
    split.n_test as test_interactions,
    lengths.n_sessions::bigint as sessions,
    lengths.sessions_per_user_mean,
    lengths.seq_len_min,
    lengths.seq_len_p25,
    lengths.seq_len_p50,
    lengths.seq_len_p75,
    lengths.seq_len_p90,
    lengths.seq_len_p99,
    lengths.seq_len_max,
    lengths.seq_len_mean,
    to_timestamp(split.min_timestamp_s) as first_event_at,
    to_timestamp(split.max_timestamp_s) as last_event_at,
    catalog.n_items_without_text
from raw_events, quarantine, staged, filtered, kcore, split, lengths, catalog
