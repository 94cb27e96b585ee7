"""Slices and the results report: hand-computed masks, metrics per slice, tables, curves, plots and JSON."""

import json
from pathlib import Path

import numpy as np
import pytest

from ml.evaluate.ranking import ranking_metrics
from ml.evaluate.report import (
    ModelReport,
    plot_recall_curves,
    plot_training_curve,
    png_markdown,
    protocols_table_markdown,
    recall_curve,
    results_json,
    results_table_markdown,
    select_best,
    slices_table_markdown,
    write_results_json,
)
from ml.evaluate.slices import SliceConfig, item_train_counts, slice_masks, slice_metrics

# 6 items; training counts: item1 4, item2 3, item3 3, item4 1, item5 0, item6 1.
TRAIN = [np.array([1, 2, 3, 1]), np.array([1, 2, 4]), np.array([3, 1, 2, 3, 6])]
HISTORIES = [np.array([1, 2]), np.array([1, 2, 3, 4, 5, 6]), np.array([3]), np.array([2, 2, 2]), np.array([6])]
TARGETS = np.array([1, 3, 2, 5, 4])


def test_train_counts_and_slice_masks_by_hand() -> None:
    counts = item_train_counts(TRAIN, 6)
    assert counts.tolist() == [0, 4, 3, 3, 1, 0, 1]
    # head_share 0.34 of 6 items -> ceil(2.04) = 3 head items: 1 (4), then the 3-3 tie 2 and 3 (lower index first).
    masks = slice_masks(HISTORIES, TARGETS, counts, SliceConfig(head_share=0.34, cold_max_count=1,
                                                                  short_history_max=2))
    assert masks["head_items"].tolist() == [True, True, True, False, False]
    assert masks["long_tail_items"].tolist() == [False, False, False, True, True]
    assert masks["cold_items"].tolist() == [False, False, False, True, True]
    assert masks["short_history_users"].tolist() == [True, False, True, False, True]
    assert masks["long_history_users"].tolist() == [False, True, False, True, False]
    assert masks["all"].all()
    # With 0.2 -> ceil(1.2) = 2 head items: the tie at the boundary goes to the lower index (2, not 3).
    two = slice_masks(HISTORIES, TARGETS, counts, SliceConfig(head_share=0.2))
    assert two["head_items"].tolist() == [True, False, True, False, False]


def test_slice_metrics_are_the_metrics_of_the_slice_users_and_empty_slices_stay() -> None:
    ranks = np.array([1, 4, 12, 2, 30])
    masks = {"all": np.ones(5, bool), "some": np.array([True, False, True, False, False]), "none": np.zeros(5, bool)}
    result = slice_metrics(ranks, masks)
    assert result["some"] == {**ranking_metrics(np.array([1, 12])), "users": 2.0}
    assert result["all"]["recall@10"] == pytest.approx(3 / 5)
    assert result["none"] == {"users": 0.0}
    with pytest.raises(ValueError):
        SliceConfig(head_share=1.5)


def _report(model: str, valid_ndcg: float, ranks: list[int]) -> ModelReport:
    test = ranking_metrics(np.array(ranks))
    return ModelReport(model=model, valid={"ndcg@10": valid_ndcg}, test=test,
                       slices={"all": {**test, "users": float(len(ranks))}, "cold_items": {"users": 0.0}},
                       test_ranks=np.array(ranks), extra={"best_epoch": np.int64(3)})


def test_tables_curves_selection_and_json(tmp_path: Path) -> None:
    reports = [_report("popularity", 0.02, [1, 3, 10]), _report("sasrec", 0.05, [2, 50, 60]),
               _report("learn", 0.04, [1, 1, 1])]
    table = results_table_markdown(reports)
    assert table.splitlines()[2].startswith("| popularity | 0.0200 | 0.6667 | 1.0000 | 1.0000 |")
    assert "| learn | 0.0400 | 1.0000 |" in table
    slices = slices_table_markdown(reports)
    assert "all (3 users)" in slices and "cold_items (0 users)" in slices and "| sasrec | 0.3333 | - |" in slices
    np.testing.assert_allclose(recall_curve(np.array([1, 3, 10]), 10)[[0, 2, 9]], [1 / 3, 2 / 3, 1.0])
    # Selection is on validation: learn has the best test numbers but sasrec the best validation NDCG@10.
    assert select_best(reports).model == "sasrec"
    assert select_best(reports, candidates=["popularity", "learn"]).model == "learn"
    with pytest.raises(ValueError):
        select_best(reports, candidates=["nope"])
    document = results_json("toy", reports, "sasrec")
    write_results_json(tmp_path / "out" / "results.json", document)
    loaded = json.loads((tmp_path / "out" / "results.json").read_text())
    assert loaded == document and loaded["models"]["sasrec"]["extra"]["best_epoch"] == 3
    assert "test_ranks" not in loaded["models"]["sasrec"]


def test_plots_are_pngs_and_byte_identical_for_the_same_numbers(tmp_path: Path) -> None:
    reports = [_report("a", 0.1, [1, 5, 20]), _report("b", 0.2, [2, 2, 40])]
    first = plot_recall_curves(reports, tmp_path / "one.png").read_bytes()
    second = plot_recall_curves(reports, tmp_path / "two.png").read_bytes()
    assert first.startswith(b"\x89PNG") and first == second
    history = [{"epoch": 1, "loss": 2.0, "valid_recall@10": 0.1, "valid_ndcg@10": 0.05},
               {"epoch": 2, "loss": 1.5, "valid_recall@10": 0.2, "valid_ndcg@10": 0.08}]
    curve = plot_training_curve(history, tmp_path / "curve.png", title="toy")
    assert png_markdown(curve, "toy curve").startswith("![toy curve](data:image/png;base64,iVBOR")


def test_protocols_table_puts_the_headline_and_the_other_protocol_side_by_side() -> None:
    report = _report("sasrec", 0.05, [2, 50, 60])
    masked = {**report.test, "recall@10": 0.5, "ndcg@10": 0.25, "mrr": 0.125}
    report = ModelReport(report.model, report.valid, report.test, report.slices, report.test_ranks,
                         {**report.extra, "test_history_masked": masked})
    table = protocols_table_markdown([report], "history_unmasked", "test_history_masked").splitlines()
    assert table[0] == ("| model | recall@10 (history_unmasked) | ndcg@10 (history_unmasked) | mrr (history_unmasked) | "
                        "recall@10 (history_masked) | ndcg@10 (history_masked) | mrr (history_masked) |")
    expected = [report.test["recall@10"], report.test["ndcg@10"], report.test["mrr"], 0.5, 0.25, 0.125]
    assert table[2] == "| sasrec | " + " | ".join(f"{value:.4f}" for value in expected) + " |"
