"""The popularity baseline: every user gets the items ranked by their training interaction count."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class PopularityModel(nn.Module):
    """Scores each item by how often it occurs in the training sequences (the same list for every user).

    Counts come from the train split only, so validation and test targets never leak into the scores;
    at test time the model is not refitted on train + validation, exactly like the trained models.
    """

    def __init__(self, n_items: int) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError("n_items must be at least 1")
        self.n_items = n_items
        self.register_buffer("counts", torch.zeros(n_items + 1, dtype=torch.float32))

    @classmethod
    def fit(cls, train: Sequence[np.ndarray], n_items: int) -> PopularityModel:
        """Count each item index (1..n_items) over the training sequences."""
        model = cls(n_items)
        flat = np.concatenate([np.asarray(seq, dtype=np.int64) for seq in train]) if train else np.zeros(0, np.int64)
        if len(flat) and (flat.min() < 1 or flat.max() > n_items):
            raise ValueError(f"training sequences hold item indices outside 1..{n_items}")
        model.counts.copy_(torch.from_numpy(np.bincount(flat, minlength=n_items + 1).astype(np.float32)))
        return model

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(batch, n_items + 1) training counts for every history (column 0 = padding = -inf)."""
        scores = self.counts.clone()
        scores[0] = float("-inf")
        return scores.unsqueeze(0).expand(len(histories), -1)
