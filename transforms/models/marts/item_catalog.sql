with catalog as (

    select * from {{ ref('stg_items') }}

),

kcore_counts as (

    select item_id, count(*) as n_interactions
    from {{ this_dataset(ref('interactions')) }}
    group by item_id

),

all_items as (

    -- Items in the interactions but not in the catalog (a dataset without one) still get a row.
    select
        coalesce(catalog.item_id, kcore_counts.item_id) as item_id,
        catalog.title,
        catalog.brand,
        catalog.categories,
        catalog.attributes,
        catalog.description,
        catalog.item_id is not null as in_catalog,
        coalesce(kcore_counts.n_interactions, 0) as n_interactions
    from catalog
    full outer join kcore_counts on catalog.item_id = kcore_counts.item_id

),

with_text as (

    select
        *,
        nullif({{ item_text('title', 'brand', 'categories', 'attributes', 'description') }}, '') as catalog_text
    from all_items

)

select
    {{ dataset_literal() }} as dataset,
    item_id,
    title,
    brand,
    categories,
    attributes,
    description,
    in_catalog,
    n_interactions,
    n_interactions > 0 as in_interactions,
    -- Items with no text fields fall back to their id, visibly: item_text_source says which.
    coalesce(catalog_text, 'Item ' || item_id) as item_text,
    case when catalog_text is null then 'item_id' else 'catalog' end as item_text_source
from with_text
