"""Training of the graph-CF backbones (LightGCN, SimGCL, GCCF) and their RLMRec variants (Con, Gen).

One epoch visits every distinct training (user, item) edge once, in a seeded random order, in batches
of `batch_size` (4,096 in the paper) with one uniformly sampled negative per edge that the user has
not interacted with in training. Every step propagates the whole graph (no neighbour sampling).

- base: BPR + L2 (+ SimGCL's own contrastive term for that backbone).
- con: + `alignment_weight` x InfoNCE between each batch node's CF embedding and its own mapped profile
  vector (the batch's distinct users, and its distinct positive and negative items, separately).
- gen: a `mask_ratio` of all nodes' layer-0 rows is replaced by the mask token before the step's
  propagation (used by BPR as well, as in masked-autoencoder training), and + `reconstruction_weight` x
  the reconstruction loss of the masked nodes' profile vectors. Evaluation propagates without a mask.

Validation ranks each user's validation target with the shared evaluator on the served scores, which
leave out the user's training items (`exclude_history`, the protocol the CF literature and RLMRec
report); early stopping selects on its NDCG@10, and the evaluation asset reuses those metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ml.evaluate.ranking import evaluate_model
from ml.models.graph_cf import GraphCFConfig, GraphCFRecommender, build_backbone, train_edges
from ml.models.rlmrec import ContrastiveAlignment, MaskedReconstruction, shuffled_rows
from ml.train.early_stopping import EarlyStoppingOutcome, EpochCallback, epoch_budget, fit_with_early_stopping

logger = logging.getLogger(__name__)

# Users scored per validation batch: (batch, n_items) floats stay small on Beauty's 12k items.
SCORE_BATCH = 2048
# Resampling rounds for negatives that hit a training item; a user holding almost every item could loop.
MAX_NEGATIVE_ROUNDS = 100


@dataclass
class GraphCFResult:
    """The trained recommender (best validation weights, its training graph inside), its alignment module
    (as after the last epoch: only training reads it) and the epoch history."""

    model: GraphCFRecommender
    alignment: nn.Module | None
    outcome: EarlyStoppingOutcome
    config: GraphCFConfig
    extra: dict[str, float | str]

    @property
    def best_epoch(self) -> int:
        """The selected epoch."""
        return self.outcome.best_epoch

    @property
    def best_valid(self) -> dict[str, float]:
        """Its validation metrics."""
        return self.outcome.best_valid

    @property
    def history(self) -> list[dict[str, float]]:
        """One record per epoch run."""
        return self.outcome.history


def pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """One int64 key per (user row, item index in 1..n_items) pair, for sorted membership lookups."""
    return users * (n_items + 1) + items


def sample_negatives(users: np.ndarray, n_items: int, train_keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniform item index in 1..n_items per user, never one of the user's training items.

    `train_keys` is the sorted `pair_keys` of the training edges.
    """
    negatives = rng.integers(1, n_items + 1, size=len(users))
    for _ in range(MAX_NEGATIVE_ROUNDS):
        keys = pair_keys(users, negatives, n_items)
        positions = np.searchsorted(train_keys, keys).clip(max=len(train_keys) - 1)
        hits = train_keys[positions] == keys
        if not hits.any():
            return negatives
        negatives[hits] = rng.integers(1, n_items + 1, size=int(hits.sum()))
    raise ValueError(f"could not sample negatives in {MAX_NEGATIVE_ROUNDS} rounds: some user holds almost every item")


def capped(rows: torch.Tensor, limit: int | None, generator: torch.Generator) -> torch.Tensor:
    """At most `limit` of `rows`, drawn uniformly without replacement (all of them when None or fewer)."""
    if limit is None or len(rows) <= limit:
        return rows
    return rows[torch.randperm(len(rows), generator=generator)[:limit]]


def _semantic_tables(user_semantic: np.ndarray | None, item_semantic: np.ndarray | None, n_users: int,
                     n_items: int, config: GraphCFConfig, generator: torch.Generator) -> torch.Tensor | None:
    """(n_users + n_items, semantic_dim) profile vectors in node order, shuffled within each kind for the control."""
    if config.variant == "base":
        return None
    if user_semantic is None or item_semantic is None:
        raise ValueError(f"variant {config.variant!r} needs user and item semantic vectors")
    users = torch.as_tensor(np.asarray(user_semantic, dtype=np.float32))
    items = torch.as_tensor(np.asarray(item_semantic, dtype=np.float32))
    if users.shape[0] != n_users or items.shape[0] != n_items or users.shape[1] != items.shape[1]:
        raise ValueError(f"semantic vectors {tuple(users.shape)} and {tuple(items.shape)} do not match "
                         f"{n_users} users and {n_items} items of one width")
    if config.shuffle_profiles:
        users, items = users[shuffled_rows(n_users, generator)], items[shuffled_rows(n_items, generator)]
    return torch.cat([users, items])


def validation_metrics(model: GraphCFRecommender, train: Sequence[np.ndarray], targets: np.ndarray
                       ) -> dict[str, float]:
    """Metrics of every user's validation target on the served scores (history ranked by the evaluator)."""
    model.eval()
    return evaluate_model(model.score, train, targets, SCORE_BATCH, user_rows=np.arange(len(train))).metrics


def train_graph_cf(train: Sequence[np.ndarray], valid_targets: np.ndarray, n_items: int,
                   config: GraphCFConfig, user_semantic: np.ndarray | None = None,
                   item_semantic: np.ndarray | None = None, on_epoch: EpochCallback | None = None,
                   validation: Callable[[GraphCFRecommender], dict[str, float]] | None = None) -> GraphCFResult:
    """Train the configured backbone (and its Con or Gen alignment) on the training sequences; keep the best epoch.

    `validation` replaces the leave-one-out validation on `valid_targets` (e.g. the random-holdout
    protocol's, see `ml/evaluate/holdout.py`); it gets the model in eval mode.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n_users = len(train)
    edge_users, edge_items = train_edges(train)
    if len(edge_users) == 0:
        raise ValueError("no training interactions")
    train_keys = np.sort(pair_keys(edge_users, edge_items, n_items))
    semantic = _semantic_tables(user_semantic, item_semantic, n_users, n_items, config, generator)

    model = GraphCFRecommender(build_backbone(n_users, n_items, config), edge_users, edge_items, config)
    backbone, adjacency = model.backbone, model.adjacency
    alignment: nn.Module | None = None
    if semantic is not None and config.variant == "con":
        alignment = ContrastiveAlignment(semantic.shape[1], backbone.output_dim, config.temperature)
    elif semantic is not None and config.variant == "gen":
        alignment = MaskedReconstruction(semantic.shape[1], backbone.output_dim, config.mask_ratio,
                                         config.temperature, config.reconstruction_loss, mask_dim=config.dim)
    parameters = list(model.parameters()) + (list(alignment.parameters()) if alignment is not None else [])
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    steps_per_epoch = math.ceil(len(edge_users) / config.batch_size)
    budget = epoch_budget(steps_per_epoch, config.max_epochs, config.eval_every, config.max_steps)
    name = f"{config.backbone}[{config.variant}{', shuffled profiles' if config.shuffle_profiles else ''}]"
    logger.info("%s: %d users, %d items, %d training edges, %d steps per epoch, up to %d epochs", name, n_users,
                n_items, len(edge_users), steps_per_epoch, budget.max_epochs)

    def train_epoch() -> dict[str, float]:
        model.train()
        order = torch.randperm(len(edge_users), generator=generator).numpy()
        totals = {"loss": 0.0, "bpr": 0.0, "self_supervised": 0.0, "alignment": 0.0}
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            users_np = edge_users[rows]
            users = torch.from_numpy(users_np)
            positives = torch.from_numpy(edge_items[rows])
            negatives = torch.from_numpy(sample_negatives(users_np, n_items, train_keys, rng))
            masked = None
            if isinstance(alignment, MaskedReconstruction):
                layer0, masked = alignment.mask(backbone.embedding.weight, generator)
                nodes = backbone.propagate(adjacency, layer0)
            else:
                nodes = backbone.propagate(adjacency)
            bpr = backbone.bpr_loss(nodes, users, positives, negatives, config.l2)
            self_supervised = backbone.auxiliary_loss(adjacency, users, torch.cat([positives, negatives]), generator)
            aligned = torch.zeros(())
            if isinstance(alignment, ContrastiveAlignment):
                batch_users = capped(torch.unique(users), config.max_alignment_nodes, generator)
                batch_items = capped(n_users + torch.unique(torch.cat([positives, negatives])) - 1,
                                     config.max_alignment_nodes, generator)
                aligned = alignment(nodes[batch_users], semantic[batch_users]) + alignment(
                    nodes[batch_items], semantic[batch_items])
            elif isinstance(alignment, MaskedReconstruction):
                aligned = alignment(nodes, semantic, capped(masked, config.max_alignment_nodes, generator))
            weight = config.reconstruction_weight if masked is not None else config.alignment_weight
            loss = bpr + self_supervised + weight * aligned
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for key, value in (("loss", loss), ("bpr", bpr), ("self_supervised", self_supervised),
                               ("alignment", aligned)):
                totals[key] += value.item()
        return {key: value / steps_per_epoch for key, value in totals.items()}

    def validate() -> dict[str, float]:
        if validation is None:
            return validation_metrics(model, train, valid_targets)
        model.eval()
        return validation(model)

    outcome = fit_with_early_stopping(model, train_epoch, validate, budget.max_epochs, config.patience,
                                      budget.eval_every, on_epoch, name=name)
    extra: dict[str, float | str] = {"training_edges": len(edge_users), "steps_per_epoch": steps_per_epoch,
                                     "seconds_per_epoch": float(np.mean([r["seconds"] for r in outcome.history]))}
    return GraphCFResult(model=model, alignment=alignment, outcome=outcome, config=config, extra=extra)
