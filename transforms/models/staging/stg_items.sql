with source as (

    select * from {{ source('raw', 'items') }}
    where dataset = {{ dataset_literal() }}

)

select
    dataset,
    item_id,
    title,
    description,
    brand,
    categories,
    attributes
from source
