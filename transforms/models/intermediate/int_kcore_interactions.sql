{#-
  The interactions that survive the k-core (var k_core), with the passes it took. The pre-hook peels
  the dataset's narrow edge set in place (macros/kcore.sql); the payload joins back once here.
-#}
{{ config(
    materialized='dataset_partitioned',
    pre_hook="{{ build_kcore_edges(this_dataset(ref('int_sessions')), var('k_core')) }}",
    post_hook="{{ drop_kcore_edges() }}",
) }}

select
    sessions.*,
    (select passes from kcore_passes) as kcore_passes
from {{ this_dataset(ref('int_sessions')) }} as sessions
semi join kcore_edges using (ingest_order)
