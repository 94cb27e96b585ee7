"""Raw data handling: the dataset registry and raw-log ingestion into DuckDB."""
