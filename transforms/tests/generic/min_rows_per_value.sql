{# Fails on every value of the column that occurs in fewer than min_rows rows (the k-core property). #}
{% test min_rows_per_value(model, column_name, min_rows) %}
select {{ column_name }}, count(*) as n_rows
from {{ model }}
group by {{ column_name }}
having count(*) < {{ min_rows }}
{% endtest %}
