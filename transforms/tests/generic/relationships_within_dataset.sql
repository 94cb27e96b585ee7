{# Fails on every row whose (dataset, column) has no match in (dataset, field) of `to`. #}
{% test relationships_within_dataset(model, column_name, to, field) %}
with child as (
    select dataset, {{ column_name }} as value from {{ model }}
),
parent as (
    select dataset, {{ field }} as value from {{ to }}
)
select child.dataset, child.value
from child
left join parent on parent.dataset = child.dataset and parent.value = child.value
where child.value is not null
  and parent.value is null
{% endtest %}
