"""Great Expectations 1.x suites for the data layer, as plain functions (no Dagster import)."""
