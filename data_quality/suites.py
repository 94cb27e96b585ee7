"""GX 1.x expectation suites over DataFrames pulled from the warehouse; each returns a plain outcome.

The suites run on an ephemeral GX context (nothing written to disk), so Dagster asset checks,
tests and scripts can call them alike and turn the outcome into check results and metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

logger = logging.getLogger(__name__)

SPLIT_LABELS = ("train", "valid", "test")


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict and what GX observed."""

    expectation: str
    column: str | None
    success: bool
    observed: Any


@dataclass(frozen=True)
class SuiteOutcome:
    """A suite's overall verdict with every expectation's outcome."""

    suite: str
    success: bool
    expectations: tuple[ExpectationOutcome, ...]

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """The expectations that failed."""
        return [outcome for outcome in self.expectations if not outcome.success]

    def as_markdown(self) -> str:
        """A markdown table of the outcomes, for Dagster metadata."""
        lines = ["| expectation | column | ok | observed |", "|---|---|---|---|"]
        for outcome in self.expectations:
            lines.append(
                f"| {outcome.expectation} | {outcome.column or ''} | {'yes' if outcome.success else 'NO'} "
                f"| {outcome.observed} |"
            )
        return "\n".join(lines)


def _run_suite(name: str, frame: pd.DataFrame, expectations: list[gxe.Expectation]) -> SuiteOutcome:
    """Validate `frame` against `expectations` in an ephemeral GX context."""
    context = gx.get_context(mode="ephemeral")
    # Progress bars are terminal noise in Dagster logs and CI output.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas(f"{name}_source")
        .add_dataframe_asset(f"{name}_frame")
        .add_batch_definition_whole_dataframe(f"{name}_batch")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    result = batch.validate(suite)
    outcomes = tuple(
        ExpectationOutcome(
            expectation=item.expectation_config.type,
            column=item.expectation_config.kwargs.get("column"),
            success=bool(item.success),
            observed=_observed(item.result),
        )
        for item in result.results
    )
    outcome = SuiteOutcome(suite=name, success=bool(result.success), expectations=outcomes)
    logger.info("GX suite %s: %s (%d expectations)", name, "passed" if outcome.success else "FAILED",
                len(outcomes))
    return outcome


def _observed(result: dict[str, Any]) -> Any:
    """The most telling observation of an expectation result: its value, or its unexpected count."""
    if "observed_value" in result:
        return result["observed_value"]
    if "unexpected_count" in result:
        # GX reports no percentage (None) when every value is null.
        return f"{result['unexpected_count']} unexpected ({result.get('unexpected_percent') or 0:.3g}%)"
    return ""


@dataclass(frozen=True)
class RawEventThresholds:
    """What ingested events of a dataset must satisfy."""

    min_timestamp_s: float
    max_timestamp_s: float
    max_quarantine_rate: float
    min_rows: int = 1
    has_timestamps: bool = True  # False: the registry maps no timestamp, every timestamp_s is NULL


def validate_ingested_events(
    events: pd.DataFrame, quarantined_lines: int, thresholds: RawEventThresholds
) -> SuiteOutcome:
    """Ingested events: row count, null rates of the keys, timestamp range, and the quarantine rate."""
    total_lines = len(events) + quarantined_lines
    frame = events.assign(quarantine_rate=quarantined_lines / total_lines if total_lines else 0.0)
    timestamps: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToNotBeNull(column="timestamp_s"),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp_s", min_value=thresholds.min_timestamp_s, max_value=thresholds.max_timestamp_s
        ),
    ] if thresholds.has_timestamps else [
        # A log without timestamps must not have some: that would mix two orderings in one sequence.
        gxe.ExpectColumnValuesToBeNull(column="timestamp_s"),
    ]
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=thresholds.min_rows),
        *[gxe.ExpectColumnValuesToNotBeNull(column=name) for name in ("user_id", "item_id")],
        *timestamps,
        gxe.ExpectColumnMaxToBeBetween(column="quarantine_rate", max_value=thresholds.max_quarantine_rate),
    ]
    columns = ["user_id", "item_id", "timestamp_s", "quarantine_rate"]
    return _run_suite("raw_events", frame[columns], expectations)


def validate_interactions(interactions: pd.DataFrame, min_sequence_length: int) -> SuiteOutcome:
    """Split interactions: keys present, splits valid, one test and one valid per user, sequences sorted.

    Expects columns user_id, item_id, split, sequence_position, sequence_length and `in_order`: whether
    the row's (timestamp, event order) is not before the previous position's (computed in SQL).
    """
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *[gxe.ExpectColumnValuesToNotBeNull(column=column) for column in ("user_id", "item_id", "split")],
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLIT_LABELS)),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "sequence_position"]),
        gxe.ExpectColumnValuesToBeBetween(column="sequence_length", min_value=min_sequence_length),
        gxe.ExpectColumnValuesToBeInSet(column="in_order", value_set=[True]),
    ]
    outcome = _run_suite("interactions", interactions, expectations)
    # One valid and one test target per user is a cross-row property; GX checks it on per-user counts.
    split = interactions["split"]
    per_user = (
        interactions.assign(is_valid=split.eq("valid"), is_test=split.eq("test"))
        .groupby("user_id")[["is_valid", "is_test"]]
        .sum()
    )
    targets = _run_suite("interaction_targets", per_user, [
        gxe.ExpectColumnValuesToBeBetween(column="is_valid", min_value=1, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="is_test", min_value=1, max_value=1),
    ])
    return SuiteOutcome(
        suite="interactions",
        success=outcome.success and targets.success,
        expectations=outcome.expectations + targets.expectations,
    )
