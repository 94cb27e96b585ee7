{# The dataset being built: the dbt var set by Dagster from the run's partition key. #}
{% macro dataset_var() -%}
    {%- set name = var('dataset') -%}
    {%- if execute and name is none -%}
        {{ exceptions.raise_compiler_error("dbt var 'dataset' is required: pass --vars '{dataset: <name>}'") }}
    {%- endif -%}
    {%- if name is not none and not modules.re.match('^[a-z0-9][a-z0-9_-]{0,62}$', name) -%}
        {{ exceptions.raise_compiler_error("dbt var 'dataset' is not a valid dataset name: " ~ name) }}
    {%- endif -%}
    {{- name -}}
{%- endmacro %}

{# A SQL literal for the dataset being built. #}
{% macro dataset_literal() -%}
    '{{ dataset_var() }}'
{%- endmacro %}

{#
  Pre-hook of every dataset-partitioned table: delete the partition's old rows, then the model
  (materialized `dataset_partitioned`) inserts the new ones in the same transaction. A rerun or
  backfill replaces one dataset only.
#}
{% macro delete_dataset_partition() -%}
    {#- Views (int_interactions_filtered) get the hook too: only a table has rows to delete. -#}
    {%- set existing = load_relation(this) if execute else none -%}
    {%- if existing is not none and existing.is_table and config.get('materialized') != 'view' -%}
        delete from {{ this }} where dataset = {{ dataset_literal() }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{# The current dataset's rows of a dataset-partitioned relation (tables hold every dataset). #}
{% macro this_dataset(relation) -%}
    (select * from {{ relation }} where dataset = {{ dataset_literal() }})
{%- endmacro %}
