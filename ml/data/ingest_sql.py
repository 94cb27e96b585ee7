"""The SQL of ingestion: staged raw rows in, each row's cleaned values and the reason it is unusable out.

`ml/data/ingest.py` stages every line of a raw file as text and runs these statements over the stage,
so every file format obeys the same field rules (missing ids, over-long fields, timestamps, event
ids, ratings, unknown or duplicate item ids); rows with a reason go to quarantine, the rest to the
raw layer.
"""

from __future__ import annotations

from ml.data.registry import DatasetConfig, EventColumns, TimestampUnit

# Staged event values, all text until classified: our field name -> the registry's column mapping field.
EVENT_FIELDS: dict[str, str] = {
    "user_id": "user_id",
    "item_id": "item_id",
    "event_id_raw": "event_id",
    "event_type": "event_type",
    "timestamp_raw": "timestamp",
    "rating_raw": "rating",
    "review_text": "review_text",
}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def json_events_sql(columns: EventColumns) -> str:
    """SQL turning raw JSON lines (relation _event_lines) into staged events; DuckDB parses each line once.

    A line that starts like an object goes straight to the extraction of every mapped field, under
    `try` (NULL where the line is not valid JSON: DuckDB's extraction raises exactly where `json_valid`
    is false); only lines that do not start like an object are parsed by `json_valid`, to tell bad
    JSON from a valid non-object. A valid document is an object exactly when its first non-blank
    character is "{".
    """
    mapped = [(name, getattr(columns, mapping_field)) for name, mapping_field in EVENT_FIELDS.items()]
    paths = [_sql_string('$."' + column.replace('"', '\\"') + '"') for _, column in mapped if column]
    values, position = [], 0
    for name, column in mapped:
        if column:
            position += 1
            values.append(f"fields[{position}] as {name}")
        else:
            values.append(f"null::varchar as {name}")
    return f"""
        with parsed as materialized (
            select
                line_number, ingest_order, raw_text, detail as read_detail, reason as read_reason,
                reason is null and ltrim(raw_text, ' \t\r')[1] = '{{' as starts_like_object,
                case when starts_like_object
                    then try(json_extract_string(raw_text, [{", ".join(paths)}])) end as fields,
                case
                    when starts_like_object then fields is not null
                    when reason is null then json_valid(raw_text)
                    else false
                end as valid,
                starts_like_object and fields is not null as is_object
            from _event_lines
        )
        select
            line_number, ingest_order, raw_text,
            case
                when read_reason is not null then read_reason
                when not is_object then 'unparseable'
            end as reason,
            case
                when read_reason is not null then read_detail
                when not valid then 'invalid JSON'
                when not is_object then 'JSON value is not an object'
            end as detail,
            {", ".join(values)}
        from parsed
    """


def _blank_to_null(column: str) -> str:
    return f"case when trim({column}) = '' then null else {column} end"


def _too_long_sql(columns: list[str], limit: int) -> str:
    """SQL naming the first of `columns` longer than `limit` characters (NULL when none is)."""
    return "case " + " ".join(f"when length({c}) > {limit} then '{c}'" for c in columns) + " end"


def classified_events_sql(dataset: DatasetConfig, has_catalog: bool, staged: str) -> str:
    """SQL over staged events (the relation or subquery `staged`): typed values and why a row is unusable."""
    settings = dataset.settings
    divisor = 1000.0 if dataset.events.timestamp_unit is TimestampUnit.MILLISECONDS else 1.0
    event_id_mapped = dataset.events.columns.event_id is not None
    # Without a timestamp column, events keep a NULL timestamp: order comes from event id or line order.
    timestamp_checks = """
                when timestamp_raw is null then 'missing_timestamp'""" if dataset.events.columns.timestamp else ""
    timestamp_value_checks = f"""
                when timestamp_s is null then 'timestamp_not_numeric'
                when not isfinite(timestamp_s)
                  or timestamp_s < {settings.min_timestamp_s} or timestamp_s > {settings.max_timestamp_s}
                    then 'timestamp_out_of_range'""" if dataset.events.columns.timestamp else ""
    catalog_check = (
        "when item_id not in (select item_id from raw.items where dataset = $dataset) then 'item_not_in_catalog'"
        if has_catalog else ""
    )
    return f"""
        with cleaned as (
            select
                line_number, ingest_order, raw_text, reason, detail,
                nullif(trim(user_id), '') as user_id,
                nullif(trim(item_id), '') as item_id,
                nullif(trim(event_id_raw), '') as event_id_raw,
                {_blank_to_null('event_type')} as event_type,
                nullif(trim(timestamp_raw), '') as timestamp_raw,
                nullif(trim(rating_raw), '') as rating_raw,
                {_blank_to_null('review_text')} as review_text
            from {staged}
        ),
        typed as (
            select
                *,
                try_cast(timestamp_raw as double) / {divisor} as timestamp_s,
                try_cast(event_id_raw as bigint) as event_id,
                try_cast(rating_raw as double) as rating,
                {_too_long_sql(list(EVENT_FIELDS), settings.max_field_chars)} as long_field
            from cleaned
        )
        select
            *,
            case
                when reason is not null then reason
                when user_id is null then 'missing_user_id'
                when item_id is null then 'missing_item_id'{timestamp_checks}
                {"when event_id_raw is null then 'missing_event_id'" if event_id_mapped else ""}
                when long_field is not null then 'field_too_long'{timestamp_value_checks}
                {"when event_id is null then 'event_id_not_integer'" if event_id_mapped else ""}
                when rating_raw is not null and rating is null then 'rating_not_numeric'
                -- NaN or infinity parse as doubles and would pass any min_rating.
                when rating is not null and not isfinite(rating) then 'rating_not_finite'
                {catalog_check}
            end as final_reason,
            case
                when reason is not null then detail
                when long_field is not null then 'field ' || long_field
            end as final_detail
        from typed
    """


def classified_items_sql(dataset: DatasetConfig) -> str:
    """SQL over all staged catalog rows (_stage_items): cleaned values and the reason a row is unusable."""
    limit = dataset.settings.max_field_chars
    return f"""
        with cleaned as (
            select
                line_number, raw_text, reason, detail,
                nullif(trim(item_id), '') as item_id,
                {_blank_to_null('title')} as title,
                {_blank_to_null('description')} as description,
                {_blank_to_null('brand')} as brand,
                categories,
                attributes,
                array_to_string(categories, '|') as categories_text
            from _stage_items
        ),
        checked as (
            select
                *,
                {_too_long_sql(['item_id', 'title', 'description', 'brand', 'categories_text', 'attributes'],
                               limit)} as long_field
            from cleaned
        ),
        ranked as (
            -- The first usable row of an item id wins; later usable rows with that id are duplicates.
            select
                *,
                row_number() over (
                    partition by item_id, (reason is null and long_field is null) order by line_number
                ) as copy_number,
                min(line_number) over (
                    partition by item_id, (reason is null and long_field is null)
                ) as first_line
            from checked
        )
        select
            *,
            case
                when reason is not null then reason
                when item_id is null then 'missing_item_id'
                when long_field is not null then 'field_too_long'
                when copy_number > 1 then 'duplicate_item_id'
            end as final_reason,
            case
                when reason is not null then detail
                when long_field is not null then 'field ' || replace(long_field, 'categories_text', 'categories')
                when copy_number > 1 then 'first seen at line ' || first_line
            end as final_detail
        from ranked
    """
