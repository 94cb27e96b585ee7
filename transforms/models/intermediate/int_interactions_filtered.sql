-- Events that count as interactions: all of them, or those rated at least min_rating when it is set.
{% set min_rating = var('min_rating') %}

select *
from {{ this_dataset(ref('stg_events')) }}  -- a table of every dataset
{% if min_rating is not none %}
where rating >= {{ min_rating }}
{% endif %}
