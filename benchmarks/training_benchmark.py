"""Train the pipeline's models on one dataset; print test metrics (both protocols, slices) and wall times.

Reads what the pipeline already built: the split (`marts.user_sequences` in the warehouse) and the
frozen content embeddings of the embedding store (`make run` or the Dagster UI materializes them).
Every model is trained with the defaults of its Dagster training asset (`SASRecTrainingConfig`,
`ContentSASRecTrainingConfig`, `LEARNTrainingConfig`), or a named preset of them (`TRAINING_PRESETS`),
selected on validation NDCG@10, and scored once on test by the same evaluator the evaluation asset
uses, under both protocols (history items ranked, as in the papers, and removed), with the
long-tail and cold-item slices. Nothing is written to the pipeline's checkpoints or MLflow store;
the results go to stdout and, with --out, are appended as JSON lines (one per run), so rows measured
in separate invocations can be put in one table with --table.

    .venv/bin/python -m benchmarks.training_benchmark --dataset amazon-beauty
    .venv/bin/python -m benchmarks.training_benchmark --preset converged --threads 1   # train until validation stalls
    # A/B rows: --run LABEL MODEL [KEY=VALUE ...], on top of the preset's settings of that model
    .venv/bin/python -m benchmarks.training_benchmark --preset converged \\
        --run "SASRec, bucketed, per-batch mean (before)" sasrec loss_weighting=batch_mean \\
        --run "SASRec, bucketed, every position equal" sasrec \\
        --run "Content-SASRec hybrid, MiniLM" content_sasrec content=item_text --out runs.jsonl
    .venv/bin/python -m benchmarks.training_benchmark --table runs.jsonl     # the table of earlier runs
    .venv/bin/python -m benchmarks.training_benchmark --learn-set max_epochs=20 --learn-set hidden_dim=768 \\
        --learn-set n_layers=12 --learn-set n_heads=12     # the paper's BERT-base PAL (GPU)
"""

import argparse
import json
import logging
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import torch

from ml.codes.tables import read_stream_codes
from ml.data.embedding_store import read_item_content
from ml.data.sequences import SequenceData, load_sequences
from ml.evaluate.ranking import evaluate_model, evaluate_protocols
from ml.evaluate.slices import SliceConfig, item_train_counts, slice_masks, slice_metrics
from ml.models.checkpoints import Checkpoint, load_checkpoint
from ml.models.eager import EAGER
from ml.models.learn import LEARN
from ml.models.popularity import PopularityModel
from ml.train.content_sasrec_training import train_content_sasrec
from ml.train.eager_training import train_eager
from ml.train.learn_training import train_learn
from ml.train.resume import ResumePolicy
from ml.train.sasrec_training import train_sasrec
from orchestration.assets.generative import STREAM_SOURCES, EAGERTrainingConfig
from orchestration.assets.training import (
    CONTENT_SETS,
    ContentSASRecTrainingConfig,
    LEARNTrainingConfig,
    SASRecTrainingConfig,
)
from orchestration.paths import WAREHOUSE_ENV, data_dir
from orchestration.presets import TRAINING_PRESETS

logger = logging.getLogger("benchmarks.training")

MODELS = ("popularity", "sasrec", "content_sasrec", "learn", "eager")
SLICES = ("long_tail_items", "cold_items", "head_items")
# The training asset (and so the preset key and config class) of each benchmarked model.
ASSETS: dict[str, tuple[str, type]] = {
    "sasrec": ("sasrec_model", SASRecTrainingConfig),
    "content_sasrec": ("content_sasrec_model", ContentSASRecTrainingConfig),
    "learn": ("learn_model", LEARNTrainingConfig),
    "eager": ("eager_model", EAGERTrainingConfig),
}


@dataclass
class RunSpec:
    """One benchmark row: a label, a model and its settings on top of the preset."""

    label: str
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """key=value pairs, values parsed as JSON when they parse (numbers, booleans, null), else kept as strings."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def warehouse_path() -> str:
    """The DuckDB file the pipeline writes (its env var, else the default under the data folder)."""
    return os.environ.get(WAREHOUSE_ENV, str(data_dir() / "warehouse" / "llmrec.duckdb"))


def report_run(record: dict[str, Any], out: str | None, log: logging.Logger) -> None:
    """One run's record: logged without its config, printed as a JSON line, and appended to `out` when given."""
    log.info("%s", json.dumps({key: value for key, value in record.items() if key != "config"}))
    print(json.dumps(record), flush=True)
    if out:
        with open(out, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def trained_split(dataset: str, threads: int | None) -> SequenceData:
    """Set up a benchmark over trained checkpoints: INFO logs to stderr, torch threads, the warehouse's split."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if threads:
        torch.set_num_threads(threads)
    with duckdb.connect(warehouse_path(), read_only=True) as con:
        return load_sequences(con, dataset)


def current_checkpoint(data: SequenceData, name: str) -> Checkpoint:
    """The CURRENT checkpoint of model `name` for `data`'s dataset; exits when it has another vocabulary."""
    checkpoint = load_checkpoint(data_dir() / "checkpoints", data.dataset, name)
    if checkpoint.item_ids != data.item_ids:
        raise SystemExit(f"{name} {checkpoint.version} was trained on another vocabulary than the warehouse's")
    return checkpoint


def _content(data: SequenceData, source: str) -> np.ndarray:
    """The current published content vectors of `source`, checked against the vocabulary."""
    stored = read_item_content(data_dir() / "embeddings", data.dataset, CONTENT_SETS[source], data.item_ids)
    return np.asarray(stored.vectors)


def resume_policy(resume_dir: Path | None, dataset: str, label: str, every_minutes: float) -> ResumePolicy | None:
    """A run's partial-training file under `resume_dir` (None: no checkpointing), named by dataset and label."""
    if resume_dir is None:
        return None
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "run"
    return ResumePolicy(resume_dir / dataset / f"{slug}.pt", every_minutes)


def _train(spec: RunSpec, data: SequenceData, preset: str, resume: ResumePolicy | None = None,
           ) -> tuple[torch.nn.Module, list[dict[str, float]], dict]:
    """Train one run (saving and continuing its state under `resume`); returns (model in eval mode, per-epoch
    history, settings used)."""
    if spec.model == "popularity":
        return PopularityModel.fit(data.train, data.n_items), [], {}
    asset, config_class = ASSETS[spec.model]
    config = config_class(**{**TRAINING_PRESETS[preset].get(asset, {}), **spec.overrides})
    if spec.model == "eager":
        library_config = config.library_config()
        sources = {stream: STREAM_SOURCES[stream] for stream in library_config.active_streams}
        with duckdb.connect(warehouse_path(), read_only=True) as con:
            streams, provenance = read_stream_codes(con, data_dir() / "embeddings", data.dataset, data.item_ids,
                                                    sources)
        result = train_eager(data, streams, library_config, resume=resume)
        return result.model, result.history, {**config.model_dump(), **provenance, "best_epoch": result.best_epoch}
    if spec.model == "sasrec":
        result = train_sasrec(data, config.library_config(), resume=resume)
    elif spec.model == "content_sasrec":
        result = train_content_sasrec(data, _content(data, config.content), config.library_config(), resume=resume)
    else:
        result = train_learn(data, _content(data, config.content), config.library_config())
    return result.model, result.history, {**config.model_dump(), "best_epoch": result.best_epoch,
                                          **{key: value for key, value in getattr(result, "extra", {}).items()
                                             if key == "popularity_beta"}}


def _slices(ranks: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """The reported slices' metrics of one protocol's test ranks."""
    return {name: metrics for name, metrics in slice_metrics(ranks, masks).items() if name in SLICES}


def _measure(spec: RunSpec, data: SequenceData, preset: str, slice_config: SliceConfig,
             resume: ResumePolicy | None = None) -> dict[str, Any]:
    """Train, then score validation and test once (both protocols, slices); one JSON-ready record."""
    started = time.perf_counter()
    model, history, settings = _train(spec, data, preset, resume)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with model.cached_items() if isinstance(model, LEARN) else nullcontext():
        valid = evaluate_model(model.score, *data.history("valid"))
        test_histories, test_targets = data.history("test")
        test = evaluate_protocols(model.score, test_histories, test_targets)
    masks = slice_masks(test_histories, test_targets, item_train_counts(data.train, data.n_items), slice_config)
    epoch_seconds = [record["seconds"] for record in history]
    latency = single_user_latency(model.score, test_histories) if isinstance(model, EAGER) else {}
    return {
        **latency,
        "label": spec.label, "model": spec.model, "dataset": data.dataset, "preset": preset,
        "overrides": spec.overrides, "settings": settings, "valid": valid.metrics,
        "test": test[False].metrics, "test_history_masked": test[True].metrics,
        "slices": _slices(test[False].ranks, masks), "slices_history_masked": _slices(test[True].ranks, masks),
        "best_epoch": settings.get("best_epoch", 0), "epochs_run": len(history),
        "epoch_seconds": round(statistics.median(epoch_seconds), 1) if epoch_seconds else 0.0,
        "train_seconds": round(train_seconds, 1), "eval_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }


def single_user_latency(score: Callable[..., torch.Tensor], histories: Sequence[np.ndarray], users: int = 200,
                        pass_rows: bool = False) -> dict[str, float]:
    """p50 / p99 milliseconds of one user's ranking (one history per call), on a fixed user sample.

    `score` is a model's `score`; with `pass_rows` it is called as score([history], [row]) (ED2's user rows).
    """
    rows = np.random.default_rng(0).choice(len(histories), size=min(users, len(histories)), replace=False)

    def one(row: int) -> None:
        if pass_rows:
            score([histories[row]], np.array([row]))
        else:
            score([histories[row]])

    one(int(rows[0]))  # warm-up: first-call allocations are not a user's latency
    timings = []
    for row in rows:
        started = time.perf_counter()
        one(int(row))
        timings.append((time.perf_counter() - started) * 1000.0)
    return {"latency_ms_p50": round(float(np.percentile(timings, 50)), 1),
            "latency_ms_p99": round(float(np.percentile(timings, 99)), 1)}


def _cell(metrics: dict[str, float], metric: str = "recall@10") -> str:
    return f"{metrics[metric]:.4f}" if metric in metrics else "-"


def ablation_table(records: list[dict[str, Any]]) -> str:
    """One markdown row per run: validation, test under both protocols, slices, and time."""
    lines = ["| run | dataset | valid R@10 / N@10 | test R@10 / N@10 ranked | removed | long-tail R@10 ranked "
             "(removed) | cold R@10 ranked (removed) | head R@10 | s/epoch | best epoch / run | threads |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        sl, slm = r["slices"], r["slices_history_masked"]
        lines.append(
            f"| {r['label']} | {r['dataset']} | {_cell(r['valid'])} / {_cell(r['valid'], 'ndcg@10')} | "
            f"{_cell(r['test'])} / {_cell(r['test'], 'ndcg@10')} | {_cell(r['test_history_masked'])} / "
            f"{_cell(r['test_history_masked'], 'ndcg@10')} | {_cell(sl['long_tail_items'])} "
            f"({_cell(slm['long_tail_items'])}) | {_cell(sl['cold_items'])} ({_cell(slm['cold_items'])}) | "
            f"{_cell(sl['head_items'])} | {r['epoch_seconds']} | {r['best_epoch']} / {r['epochs_run']} | "
            f"{r['torch_threads']} |")
    return "\n".join(lines)


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    """The runs asked for: each --run, else one per --models entry with the --*-set overrides."""
    if args.run:
        for label, model, *_ in args.run:
            if model not in MODELS:
                raise SystemExit(f"--run {label!r}: unknown model {model!r}; known: {MODELS}")
        return [RunSpec(label, model, _overrides(pairs)) for label, model, *pairs in args.run]
    per_model = {"sasrec": args.sasrec_set, "content_sasrec": args.content_sasrec_set, "learn": args.learn_set,
                 "eager": args.eager_set}
    return [RunSpec(name, name, _overrides(per_model.get(name, []))) for name in args.models]


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--preset", default="quick", choices=sorted(TRAINING_PRESETS),
                        help="training preset applied before the overrides (quick = the asset defaults)")
    parser.add_argument("--run", nargs="+", action="append", default=[], metavar="LABEL MODEL [KEY=VALUE]",
                        help="one labelled row: a model and overrides of its training config (repeatable)")
    parser.add_argument("--sasrec-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a SASRecTrainingConfig field")
    parser.add_argument("--content-sasrec-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a ContentSASRecTrainingConfig field (content=item_llm, fusion=init, ...)")
    parser.add_argument("--learn-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a LEARNTrainingConfig field (content=item_llm for the frozen LLM)")
    parser.add_argument("--eager-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an EAGERTrainingConfig field (streams=semantic, stt_weight=0, beam_size=...)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--resume-dir", type=Path, default=None,
                        help="save each run's whole training state here (<dir>/<dataset>/<label>.pt) and continue "
                             "a killed run from it when rerun with the same arguments (SASRec, Content-SASRec, EAGER)")
    parser.add_argument("--checkpoint-every-minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per run to this file")
    parser.add_argument("--table", type=Path, nargs="+", default=None,
                        help="print the table of runs recorded in these --out files, train nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.table:
        records = [json.loads(line) for path in args.table for line in path.read_text().splitlines() if line]
        sys.stdout.write(ablation_table(records) + "\n")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    with duckdb.connect(warehouse_path(), read_only=True) as con:
        data = load_sequences(con, args.dataset)
    records: list[dict[str, Any]] = []
    for spec in _specs(args):
        record = _measure(spec, data, args.preset, SliceConfig(),
                          resume_policy(args.resume_dir, data.dataset, spec.label, args.checkpoint_every_minutes))
        records.append(record)
        logger.info("%s: test %s", spec.label, {k: round(v, 4) for k, v in record["test"].items()})
        if args.out:
            with args.out.open("a") as out:
                out.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.write(f"{args.dataset}: {data.n_users} users, {data.n_items} items; torch threads "
                     f"{torch.get_num_threads()}; preset {args.preset}\n{ablation_table(records)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
