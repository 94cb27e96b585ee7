{#
  The leave-one-out split in one scan: fails on every user whose rows are not positions 1..n with
  n = sequence_length >= min_length, exactly one test row (position n), one valid row (n - 1) and
  train rows otherwise. One grouped pass replaces five column tests that each scanned the table.
#}
{% test leave_one_out_split(model, min_length) %}
select user_id
from {{ model }}
group by user_id
having count(*) != max(sequence_length)
    or min(sequence_length) != max(sequence_length)
    or max(sequence_length) < {{ min_length }}
    or min(sequence_position) != 1
    or max(sequence_position) != count(*)
    or count(distinct sequence_position) != count(*)
    or count(*) filter (where split = 'test' and sequence_position = sequence_length) != 1
    or count(*) filter (where split = 'valid' and sequence_position = sequence_length - 1) != 1
    or count(*) filter (where split = 'train' and sequence_position < sequence_length - 1) != count(*) - 2
{% endtest %}
