"""Reporting the models of one dataset: markdown tables, a JSON document and recall@k / training-curve plots.

Plots are drawn on a `matplotlib.figure.Figure` (no pyplot global state, no display) and saved as
PNG without the Software/timestamp metadata, so the same numbers give the same bytes.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ml.evaluate.ranking import DEFAULT_KS

TEST_COLUMNS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")


@dataclass(frozen=True)
class ModelReport:
    """One model's validation and test metrics, test slices, test ranks (for curves) and run details."""

    model: str
    valid: dict[str, float]
    test: dict[str, float]
    slices: dict[str, dict[str, float]]
    test_ranks: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def results_table_markdown(reports: Sequence[ModelReport], ks: Sequence[int] = DEFAULT_KS) -> str:
    """One row per model: validation NDCG@10 (the selection metric), then test Recall@k, NDCG@k and MRR."""
    columns = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr"]
    lines = ["| model | valid ndcg@10 | " + " | ".join(f"test {name}" for name in columns) + " |",
             "|---" * (len(columns) + 2) + "|"]
    for report in reports:
        cells = [f"{report.valid.get('ndcg@10', float('nan')):.4f}"] + [f"{report.test[name]:.4f}" for name in columns]
        lines.append(f"| {report.model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def protocols_table_markdown(reports: Sequence[ModelReport], headline: str, other_key: str,
                             metrics: Sequence[str] = ("recall@10", "ndcg@10", "mrr")) -> str:
    """Test metrics under the headline protocol beside those stored in `extra[other_key]` (the other protocol)."""
    other = other_key.removeprefix("test_")
    columns = [f"{name} ({protocol})" for protocol in (headline, other) for name in metrics]
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for report in reports:
        cells = [f"{report.test[name]:.4f}" for name in metrics]
        cells += [f"{report.extra[other_key][name]:.4f}" for name in metrics]
        lines.append(f"| {report.model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def slices_table_markdown(reports: Sequence[ModelReport], metric: str = "recall@10") -> str:
    """One row per model, one column per test slice (header: slice name and its user count)."""
    if not reports:
        return ""
    names = list(reports[0].slices)
    header = [f"{name} ({int(reports[0].slices[name]['users'])} users)" for name in names]
    lines = [f"| model ({metric}) | " + " | ".join(header) + " |", "|---" * (len(names) + 1) + "|"]
    for report in reports:
        cells = [f"{report.slices[name][metric]:.4f}" if metric in report.slices[name] else "-" for name in names]
        lines.append(f"| {report.model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recall_curve(ranks: np.ndarray, max_k: int = 50) -> np.ndarray:
    """Recall@k for k = 1..max_k from 1-based ranks."""
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        raise ValueError("no ranks")
    return np.array([(ranks <= k).mean() for k in range(1, max_k + 1)])


def _save_png(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def plot_recall_curves(reports: Sequence[ModelReport], path: Path, max_k: int = 50) -> Path:
    """Test Recall@k against k (1..max_k), one line per model, saved as a PNG at `path`."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    ks = np.arange(1, max_k + 1)
    for report in reports:
        axes.plot(ks, recall_curve(report.test_ranks, max_k), label=report.model)
    axes.set(xlabel="k", ylabel="test recall@k", title="Leave-one-out full ranking")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return _save_png(figure, path)


def plot_training_curve(history: Sequence[dict[str, float]], path: Path, title: str = "") -> Path:
    """Training loss and validation NDCG@10 / Recall@10 per epoch, saved as a PNG at `path`."""
    figure = Figure(figsize=(8, 3.5))
    loss_axes, valid_axes = figure.subplots(1, 2)
    epochs = [int(record["epoch"]) for record in history]
    loss_axes.plot(epochs, [record["loss"] for record in history], marker="o")
    loss_axes.set(xlabel="epoch", ylabel="training loss", title=f"{title} loss".strip())
    for metric in ("recall@10", "ndcg@10"):
        valid_axes.plot(epochs, [record.get(f"valid_{metric}", float("nan")) for record in history], marker="o",
                        label=f"valid {metric}")
    valid_axes.set(xlabel="epoch", title=f"{title} validation".strip())
    valid_axes.legend()
    figure.tight_layout()
    return _save_png(figure, path)


def png_markdown(path: Path, alt: str) -> str:
    """A markdown image with the PNG inlined as a base64 data URI (the Dagster UI renders markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def results_json(dataset: str, reports: Sequence[ModelReport], selected: str | None) -> dict[str, Any]:
    """A JSON-ready document of every model's metrics, slices and run details (ranks left out)."""
    return {
        "dataset": dataset,
        "selected": selected,
        "models": {report.model: _plain({"valid": report.valid, "test": report.test, "slices": report.slices,
                                         "extra": report.extra}) for report in reports},
    }


def write_results_json(path: Path, value: dict[str, Any]) -> None:
    """Write `value` (sorted keys, indented) atomically: a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        out.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def select_best(
    reports: Sequence[ModelReport], metric: str = "ndcg@10", candidates: Sequence[str] | None = None
) -> ModelReport:
    """The report with the highest VALIDATION `metric` among `candidates` (all when None); first wins ties."""
    pool = [report for report in reports if candidates is None or report.model in candidates]
    if not pool:
        raise ValueError(f"no model among {candidates} to select from")
    best = pool[0]
    for report in pool[1:]:
        if report.valid[metric] > best.valid[metric]:
            best = report
    return best


def epoch_table_markdown(history: list[dict[str, float]]) -> str:
    """A Markdown table of a training history: epoch, loss, validation recall@10 and NDCG@10, seconds."""
    lines = ["| epoch | loss | valid recall@10 | valid ndcg@10 | seconds |", "|---|---|---|---|---|"]
    lines += [
        f"| {int(r['epoch'])} | {r['loss']:.4f} | {r.get('valid_recall@10', float('nan')):.4f} | "
        f"{r.get('valid_ndcg@10', float('nan')):.4f} | {r['seconds']:.1f} |"
        for r in history
    ]
    return "\n".join(lines)
