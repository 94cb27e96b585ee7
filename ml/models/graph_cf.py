"""LightGCN (He et al., 2020) over the train split's user-item graph: the backbone RLMRec aligns.

The graph has one node per user (rows 0..n_users - 1) and one per item (rows n_users.., item index i
at row n_users + i - 1; index 0 is padding and never a node). Its adjacency is the symmetrically
normalized D^-1/2 A D^-1/2 of the binary interaction matrix, built from the training sequences only,
so that no validation or test target can reach a user's representation.

Choices the paper leaves open, and what we do:

- Repeated interactions of a user with an item count once (LightGCN's R is binary).
- Embeddings start from N(0, 0.1), as the LightGCN reference code does.
- The output is the mean of the layer-0..L embeddings (alpha_k = 1 / (L + 1), the paper's default).
- L2 regularisation applies to the layer-0 embeddings of the batch's users and items, divided by the
  batch size, as in the reference code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def distinct_pairs(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (user, item) pairs of two aligned int64 arrays, sorted by user, then item."""
    pairs = np.unique(np.stack([users, items], axis=1), axis=0) if len(users) else np.zeros((0, 2), np.int64)
    return pairs[:, 0], pairs[:, 1]


def train_edges(train: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(user rows, 1-based item indices) of every distinct (user, item) pair in the training sequences."""
    users = np.concatenate([np.full(len(items), row, dtype=np.int64) for row, items in enumerate(train)]
                           ) if train else np.zeros(0, np.int64)
    items = np.concatenate([np.asarray(seq, dtype=np.int64) for seq in train]) if train else np.zeros(0, np.int64)
    return distinct_pairs(users, items)


def normalized_adjacency(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph with edges (users[k], items[k]), as a sparse COO tensor.

    `items` are 1-based item indices; nodes with no edge keep a zero row (their embedding does not
    propagate, as in LightGCN).
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if len(users) != len(items):
        raise ValueError(f"{len(users)} user ends for {len(items)} item ends")
    if len(users) and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(f"user rows outside 0..{n_users - 1}")
    if len(items) and (items.min() < 1 or items.max() > n_items):
        raise ValueError(f"item indices outside 1..{n_items}")
    user_nodes, edge_items = distinct_pairs(users, items)
    item_nodes = n_users + edge_items - 1
    rows = np.concatenate([user_nodes, item_nodes])
    cols = np.concatenate([item_nodes, user_nodes])
    n_nodes = n_users + n_items
    degree = np.bincount(rows, minlength=n_nodes).astype(np.float64)
    inverse_sqrt = np.zeros(n_nodes)
    inverse_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    values = (inverse_sqrt[rows] * inverse_sqrt[cols]).astype(np.float32)
    indices = torch.from_numpy(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(values), (n_nodes, n_nodes),
                                   check_invariants=True).coalesce()


class LightGCN(nn.Module):
    """ID embeddings of users and items smoothed over the graph by `n_layers` parameter-free propagations."""

    def __init__(self, n_users: int, n_items: int, dim: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        if min(n_users, n_items, dim) < 1 or n_layers < 0:
            raise ValueError("n_users, n_items and dim must be positive; n_layers must be >= 0")
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.embedding = nn.Embedding(n_users + n_items, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)

    def propagate(self, adjacency: torch.Tensor, layer0: torch.Tensor | None = None) -> torch.Tensor:
        """(n_users + n_items, dim) mean of the layer-0..L embeddings; `layer0` replaces the ego table
        (RLMRec-Gen propagates a table whose masked rows were replaced)."""
        current = self.embedding.weight if layer0 is None else layer0
        total = current
        for _ in range(self.n_layers):
            current = torch.sparse.mm(adjacency, current)
            total = total + current
        return total / (self.n_layers + 1)

    def split(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A node table cut into (users, items); items row i - 1 holds item index i."""
        return nodes[: self.n_users], nodes[self.n_users :]

    def bpr_loss(self, nodes: torch.Tensor, users: torch.Tensor, positives: torch.Tensor,
                 negatives: torch.Tensor, l2: float) -> torch.Tensor:
        """BPR over propagated `nodes` for (user row, positive item index, negative item index) triples,
        plus `l2` times the batch's layer-0 squared norms over the batch size."""
        user_vectors, item_vectors = self.split(nodes)
        u, p, n = user_vectors[users], item_vectors[positives - 1], item_vectors[negatives - 1]
        ranking = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
        ego = self.embedding.weight
        squared = (ego[users].pow(2).sum() + ego[self.n_users + positives - 1].pow(2).sum()
                   + ego[self.n_users + negatives - 1].pow(2).sum()) / 2
        return ranking + l2 * squared / len(users)

    @torch.no_grad()
    def score_users(self, nodes: torch.Tensor, user_rows: torch.Tensor) -> torch.Tensor:
        """(batch, n_items + 1) dot-product scores of the users' propagated vectors (column 0 = -inf)."""
        user_vectors, item_vectors = self.split(nodes)
        scores = user_vectors[user_rows] @ item_vectors.T
        padding = torch.full((len(user_rows), 1), float("-inf"), dtype=scores.dtype)
        return torch.cat([padding, scores], dim=1)
