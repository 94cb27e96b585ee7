"""Trained models on disk, and the one retrieval interface (user vectors x item vectors) shared by all of them.

Layout: `<root>/<dataset>/<model name>/<version>/` holds `model.pt` (kind, config, weights and, for
LEARN and Content-SASRec, the frozen content matrix it was trained on, for EAGER its code tables and
global features, for a blend both components' whole payloads, for a graph-CF model its training
edges, for ED2 its LM's config, its vocabulary layout and, in the state dict, its code tables and
semantic vectors, so a checkpoint is self-contained), `item_ids.json` (row j of every item matrix is
item_ids[j]) and `manifest.json` (kind, config, training info such as the MLflow run id and best
epoch, the sha256 of both files). The version is a digest of the weights and the vocabulary, so
retraining to identical weights keeps the version, and its manifest, of the run that first produced
them; `CURRENT` names the version downstream steps read (`ml.data.versioned`).

Loading uses `torch.load(weights_only=True)`: a checkpoint is data (tensors, numbers, strings), never code.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.data.sequences import SequenceData
from ml.data.versioned import VersionedFolder, sha256_file, write_json
from ml.models.registry import ModelConfig, RetrievalModel, TrainedModule, kind_of, payload, rebuild

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
ITEM_IDS_FILE = "item_ids.json"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Checkpoint:
    """A trained model loaded (eval mode) from one checkpoint version."""

    dataset: str
    name: str
    kind: str
    version: str
    path: Path
    model: TrainedModule
    item_ids: list[str]
    manifest: dict[str, Any]


def checkpoint_folder(root: Path, dataset: str, name: str) -> VersionedFolder:
    """The versioned folder of one model of one dataset."""
    return VersionedFolder(root / dataset / name)


def save_checkpoint(
    root: Path,
    dataset: str,
    name: str,
    model: TrainedModule,
    item_ids: Sequence[str],
    config: ModelConfig | None,
    info: dict[str, Any],
) -> Checkpoint:
    """Write `model` as a new version of `<root>/<dataset>/<name>` (or keep the identical one) and make it current."""
    item_ids = [str(item) for item in item_ids]
    if len(item_ids) != model.n_items:
        raise ValueError(f"{len(item_ids)} item ids for a model of {model.n_items} items")
    described = payload(model, config)
    kind = described["kind"]
    buffer = io.BytesIO()
    torch.save(described, buffer)
    model_bytes = buffer.getvalue()
    ids_text = json.dumps(item_ids) + "\n"
    version = hashlib.sha256(model_bytes + ids_text.encode()).hexdigest()[:16]

    def write(folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(model_bytes)
        (folder / ITEM_IDS_FILE).write_text(ids_text)
        write_json(folder / MANIFEST_FILE, {
            "dataset": dataset, "name": name, "kind": kind, "version": version, "n_items": model.n_items,
            "config": described["config"], "info": info, "created_at": datetime.now(UTC).isoformat(),
            "files": {file: sha256_file(folder / file) for file in (MODEL_FILE, ITEM_IDS_FILE)},
        })

    store = checkpoint_folder(root, dataset, name)
    path = store.write(version, write)
    store.point_to(version)
    logger.info("checkpoint %s/%s version %s at %s", dataset, name, version, path)
    return load_checkpoint(root, dataset, name, version)


def load_checkpoint(root: Path, dataset: str, name: str, version: str | None = None) -> Checkpoint:
    """Load a checkpoint version (default: CURRENT) after checking its files against the manifest."""
    store = checkpoint_folder(root, dataset, name)
    version = version or store.current()
    path = store.path(version)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    # An empty or partial file list would skip the check it exists for: both files must be named.
    missing = {MODEL_FILE, ITEM_IDS_FILE} - set(manifest.get("files", {}))
    if missing:
        raise ValueError(f"checkpoint {path} is corrupted: its manifest has no checksum for {sorted(missing)}")
    for file, expected in manifest["files"].items():
        if sha256_file(path / file) != expected:
            raise ValueError(f"checkpoint {path} is corrupted: {file} does not match its manifest checksum")
    stored = torch.load(path / MODEL_FILE, map_location="cpu", weights_only=True)
    item_ids = json.loads((path / ITEM_IDS_FILE).read_text())
    return Checkpoint(dataset=dataset, name=name, kind=stored["kind"], version=version, path=path,
                      model=rebuild(stored), item_ids=item_ids, manifest=manifest)


def supports_retrieval(model: TrainedModule) -> bool:
    """Whether the model scores by user vector x item vector, so its items can be put in an ANN index."""
    return kind_of(model).retrieval


def _served_bias(model: RetrievalModel) -> torch.Tensor | None:
    """The per-item score offset the model serves (a popularity adjustment); None for plain dot products."""
    return model.item_bias if kind_of(model).score_offset and model.has_item_bias() else None


def has_score_offset(model: RetrievalModel) -> bool:
    """Whether `item_vectors(model)` ends with a per-item score-offset column (and `user_vectors` with a 1)."""
    return _served_bias(model) is not None


@torch.no_grad()
def item_vectors(model: RetrievalModel, served: bool = True) -> np.ndarray:
    """(n_items, dim) float32 inference item vectors; row j is item index j + 1.

    With `served` and a popularity adjustment set, each row ends with the item's score offset (one
    column more than the model width), so an inner-product index ranks exactly as `model.score`;
    `served=False` gives the learned item table alone (e.g. for the behaviour codes).
    """
    model.eval()
    vectors = model.catalogue_matrix()
    bias = _served_bias(model) if served else None
    if bias is not None:
        vectors = torch.cat([vectors, bias[1:].unsqueeze(1)], dim=1)
    return vectors.cpu().numpy().astype(np.float32)


@torch.no_grad()
def user_vectors(model: RetrievalModel, histories: Sequence[np.ndarray], batch_size: int = 1024,
                 user_rows: np.ndarray | None = None) -> np.ndarray:
    """(n_users, dim) float32 query vectors, one per (non-empty) history of item indices (`item_vectors`' width).

    A graph-CF model has a vector per training user, not a history encoder: it needs `user_rows`
    (the user's row in its training graph, one per history).
    """
    model.eval()
    if kind_of(model).scoring == "user_row":
        if user_rows is None or len(user_rows) != len(histories):
            raise ValueError("a graph-CF model's user vectors need one training-graph user row per history")
        return model.user_matrix()[torch.as_tensor(np.asarray(user_rows, dtype=np.int64))].numpy().astype(np.float32)
    with_bias = has_score_offset(model)
    # Shortest histories first, as the evaluator does: a batch is padded to its longest history and most
    # are short (5x faster on Beauty's 22k users); rows go back to the callers' order at the end.
    order = np.argsort([len(items) for items in histories], kind="stable")
    chunks = []
    for start in range(0, len(order), batch_size):
        vectors = model.user_embedding([histories[row] for row in order[start : start + batch_size]])
        if with_bias:  # the constant 1 that multiplies each item's offset column
            vectors = torch.cat([vectors, torch.ones(len(vectors), 1, device=vectors.device)], dim=1)
        chunks.append(vectors.cpu().numpy())
    if not chunks:
        return np.zeros((0, 0), np.float32)
    sorted_vectors = np.concatenate(chunks).astype(np.float32)
    vectors_in_order = np.empty_like(sorted_vectors)
    vectors_in_order[order] = sorted_vectors
    return vectors_in_order


def history_encoder(checkpoint: Checkpoint) -> Callable[[list[str]], np.ndarray]:
    """A function item-id history -> the model's query vector, for `ml.index.recommend.recommend`."""
    model = checkpoint.model
    if not supports_retrieval(model):
        raise ValueError(f"{checkpoint.name} ({checkpoint.kind}) has no user tower")
    if kind_of(model).scoring == "user_row":
        raise ValueError(f"{checkpoint.name} ({checkpoint.kind}) has a vector per training user but no history "
                         "encoder; recommend by user id")
    rows = {item: row + 1 for row, item in enumerate(checkpoint.item_ids)}

    def encode(history: list[str]) -> np.ndarray:
        unknown = [item for item in history if item not in rows]
        if unknown:
            raise ValueError(f"items unknown to model {checkpoint.name} {checkpoint.version}: {unknown[:5]}")
        return user_vectors(model, [np.array([rows[item] for item in history], dtype=np.int64)])[0]

    return encode


def check_user_rows(info: dict[str, Any], data: SequenceData, name: str) -> None:
    """Refuse a model that keeps state per user row (graph CF, ED2) trained on another user list: other users."""
    if info.get("user_ids_digest") != data.user_ids_digest():
        raise ValueError(f"{name} was trained on another user list than the current {data.dataset} split; retrain it")
