{#
  One text per item for the LLM stages: each known field on its own "Name: value" line; missing
  fields are left out rather than written as empty.
#}
{% macro item_text(title, brand, categories, attributes, description) -%}
    concat_ws(
        chr(10),
        'Title: ' || nullif(trim({{ title }}), ''),
        'Brand: ' || nullif(trim({{ brand }}), ''),
        'Categories: ' || nullif(array_to_string({{ categories }}, ', '), ''),
        nullif(array_to_string(list_transform(
            json_keys({{ attributes }}),
            k -> upper(k[1]) || k[2:] || ': ' || json_extract_string({{ attributes }}, '$."' || k || '"')
        ), chr(10)), ''),
        'Description: ' || nullif(trim({{ description }}), '')
    )
{%- endmacro %}
