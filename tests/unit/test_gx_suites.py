"""The GX suites pass good frames and name what is wrong in bad ones."""

import pandas as pd

from data_quality.suites import RawEventThresholds, validate_ingested_events, validate_interactions

THRESHOLDS = RawEventThresholds(min_timestamp_s=1_000, max_timestamp_s=2_000, max_quarantine_rate=0.1)


def _events(**overrides: list) -> pd.DataFrame:
    columns = {"user_id": ["u1", "u2", "u3"], "item_id": ["a", "b", "c"], "timestamp_s": [1_000.0, 1_500.0, 2_000.0]}
    columns.update(overrides)
    return pd.DataFrame(columns)


def _failed(outcome) -> set[tuple[str, str | None]]:
    return {(failure.expectation, failure.column) for failure in outcome.failures}


def test_raw_events_suite_passes_clean_events() -> None:
    outcome = validate_ingested_events(_events(), quarantined_lines=0, thresholds=THRESHOLDS)
    assert outcome.success and not outcome.failures
    assert "expect_column_max_to_be_between" in outcome.as_markdown()


def test_raw_events_suite_flags_nulls_range_and_quarantine_rate() -> None:
    outcome = validate_ingested_events(
        _events(user_id=["u1", None, "u3"], timestamp_s=[1_000.0, 1_500.0, 9_999.0]),
        quarantined_lines=1,  # 1 of 4 lines = 25% > 10%
        thresholds=THRESHOLDS,
    )
    assert not outcome.success
    assert _failed(outcome) == {
        ("expect_column_values_to_not_be_null", "user_id"),
        ("expect_column_values_to_be_between", "timestamp_s"),
        ("expect_column_max_to_be_between", "quarantine_rate"),
    }


def test_raw_events_suite_of_a_log_without_timestamps() -> None:
    """No timestamp mapped: NULL timestamps pass, and a stray timestamp is flagged."""
    untimed = RawEventThresholds(min_timestamp_s=1_000, max_timestamp_s=2_000, max_quarantine_rate=0.1,
                                 has_timestamps=False)
    nulls = _events(timestamp_s=[None, None, None])
    assert validate_ingested_events(nulls, quarantined_lines=0, thresholds=untimed).success
    assert not validate_ingested_events(nulls, quarantined_lines=0, thresholds=THRESHOLDS).success
    stray = validate_ingested_events(_events(timestamp_s=[None, 1_500.0, None]), 0, untimed)
    assert _failed(stray) == {("expect_column_values_to_be_null", "timestamp_s")}


def _interactions(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "split", "sequence_position", "sequence_length", "in_order"])


GOOD = [("u1", "a", "train", 1, 3, True), ("u1", "b", "valid", 2, 3, True), ("u1", "c", "test", 3, 3, True)]


def test_interactions_suite_passes_a_good_split() -> None:
    assert validate_interactions(_interactions(GOOD), min_sequence_length=3).success


def test_interactions_suite_flags_unsorted_and_missing_targets() -> None:
    rows = [("u1", "a", "train", 1, 3, True), ("u1", "b", "train", 2, 3, False), ("u1", "c", "test", 3, 3, True)]
    outcome = validate_interactions(_interactions(rows), min_sequence_length=3)
    assert _failed(outcome) == {
        ("expect_column_values_to_be_in_set", "in_order"),
        ("expect_column_values_to_be_between", "is_valid"),
    }
