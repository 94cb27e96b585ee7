"""A real published index on small data: a small SASRec saved and published by the project's own code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ml.index.publish import PublishedIndex, publish_index
from ml.models.checkpoints import Checkpoint, has_score_offset, item_vectors, save_checkpoint, user_vectors
from ml.models.sasrec import SASRec, SASRecConfig
from serving.settings import ServingSettings

DATASET = "shop"
N_ITEMS, N_USERS = 80, 120


@dataclass
class PublishedShop:
    """A data folder holding one published version of `shop`, and what went into it."""

    data_dir: Path
    checkpoint: Checkpoint
    item_ids: list[str]
    user_ids: list[str]
    histories: list[np.ndarray]  # item indices (1-based), oldest first, one per user
    published: PublishedIndex

    @property
    def indexes_root(self) -> Path:
        """Where the versions are."""
        return self.data_dir / "indexes"

    def settings(self, **overrides: object) -> ServingSettings:
        """Service settings over this data folder, polling fast so swaps show quickly."""
        return ServingSettings(data_dir=self.data_dir, **{"poll_seconds": 0.2, **overrides})

    def history_ids(self, user: int) -> list[str]:
        """User `user`'s history as item ids."""
        return [self.item_ids[row - 1] for row in self.histories[user]]

    def publish_again(self, seed: int) -> PublishedIndex:
        """Publish another version from a differently seeded model (new vectors and checkpoint, same ids)."""
        return _publish(self.data_dir, _model(seed), self.item_ids, self.user_ids, self.histories)[1]


def _model(seed: int) -> SASRec:
    torch.manual_seed(seed)
    model = SASRec(N_ITEMS, SASRecConfig(hidden_dim=16, n_layers=1, n_heads=1, max_len=20)).eval()
    # A popularity adjustment, as the served models carry: the index gets a score-offset column.
    counts = np.random.default_rng(seed).integers(1, 50, N_ITEMS + 1)
    model.set_popularity_adjustment(counts, beta=0.1)
    return model


def _publish(data_dir: Path, model: SASRec, item_ids: list[str], user_ids: list[str],
             histories: list[np.ndarray]) -> tuple[Checkpoint, PublishedIndex]:
    """Save the model as a checkpoint and publish its index, as the publishing asset does."""
    checkpoint = save_checkpoint(data_dir / "checkpoints", DATASET, "sasrec", model, item_ids, model.config, {})
    return checkpoint, publish_index(
        data_dir / "indexes", DATASET, item_ids, item_vectors(model), user_ids, user_vectors(model, histories),
        {"model": "sasrec", "checkpoint_version": checkpoint.version, "mlflow_run_id": "run-1",
         "dagster_run_id": "dagster-1", "metrics": {"valid_ndcg@10": 0.05, "test_recall@10": 0.09}},
        verify_users=50, item_titles=[f"Title of {item}" for item in item_ids],
        user_histories=[[item_ids[row - 1] for row in history] for history in histories],
        score_offset_column=has_score_offset(model))


def publish_shop(tmp_path: Path) -> PublishedShop:
    """One published version of a small catalogue (80 items, 120 users with 3-12 items each) under `tmp_path`."""
    rng = np.random.default_rng(0)
    item_ids = [f"item-{number:03d}" for number in range(N_ITEMS)]
    user_ids = [f"user-{number:03d}" for number in range(N_USERS)]
    histories = [rng.choice(np.arange(1, N_ITEMS + 1), size=int(rng.integers(3, 13)), replace=False)
                 for _ in user_ids]
    checkpoint, published = _publish(tmp_path, _model(0), item_ids, user_ids, histories)
    return PublishedShop(tmp_path, checkpoint, item_ids, user_ids, histories, published)
