"""The data layer summary's formatting: a figure a dataset cannot have shows as "n/a", never an exception."""

import numpy as np
import pandas as pd

from orchestration.assets.summary import NOT_AVAILABLE, headline_value, statistics_markdown


def test_missing_figures_show_as_not_available() -> None:
    # What DuckDB's .df() gives for a timestamp-less dataset's sessions (NULL bigint) and time span (NaT).
    stats = pd.DataFrame({"users": [np.int64(943)], "density": [np.float64(0.07)],
                          "sessions": pd.array([None], dtype="Int64"), "first_event_at": [pd.NaT],
                          "min_rating": [np.nan], "dataset": ["tiny"]})
    row = stats.iloc[0]
    assert headline_value(row["users"]) == 943 and isinstance(headline_value(row["users"]), int)
    assert headline_value(row["density"]) == 0.07
    assert headline_value(row["dataset"]) == "tiny"
    for column in ("sessions", "first_event_at", "min_rating"):
        assert headline_value(row[column]) == NOT_AVAILABLE, column
    table = statistics_markdown(stats)
    assert table.count(NOT_AVAILABLE) == 3
    assert "nan" not in table.lower().replace(NOT_AVAILABLE, "") and "NaT" not in table and "<NA>" not in table
