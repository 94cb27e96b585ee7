"""Graph collaborative filtering over the train split's user-item graph: the backbones RLMRec aligns.

The graph has one node per user (rows 0..n_users - 1) and one per item (rows n_users.., item index i
at row n_users + i - 1; index 0 is padding and never a node). Its adjacency is built from the
training sequences only, so that no validation or test target can reach a user's representation.

Three backbones, the ones RLMRec's paper reports:

- **LightGCN** (He et al., 2020): D^-1/2 A D^-1/2, parameter-free propagation, the output is the mean
  of the layer-0..L embeddings (alpha_k = 1 / (L + 1), the paper's default).
- **SimGCL** (Yu et al., 2022): LightGCN's propagation with the output the mean of layers 1..L (the
  paper leaves the input layer out), and a contrastive term between two views whose every layer gets
  random noise of norm `noise_eps` in the embedding's own orthant; InfoNCE over the batch's distinct
  users and items. Defaults eps = 0.1, temperature 0.2, weight 0.2 (the paper's grid centre).
- **GCCF** (LR-GCCF, Chen et al., 2020): linear propagation over D~^-1/2 (A + I) D~^-1/2 (self-loops,
  degrees counted with them) and the output the concatenation of the layer-0..L embeddings (the
  paper's residual form), so its width is dim x (L + 1). Like the reference code, no per-layer
  weight matrices: with no nonlinearity they only re-parametrise the embeddings.

Choices the papers leave open, and what we do:

- Repeated interactions of a user with an item count once (the interaction matrix is binary).
- Embeddings start from N(0, 0.1), as the LightGCN reference code does.
- L2 regularisation applies to the layer-0 embeddings of the batch's users and items, divided by the
  batch size, as in the LightGCN reference code.
- Served scores leave out the items of the history they are given (`exclude_history`, on by default):
  the binary graph carries no repeat-consumption signal, and the published index serves the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.models.contrastive import info_nce
from ml.models.settings import EVAL_EVERY, MAX_EPOCHS, PATIENCE, STEP_BUDGET, setting

Backbone = Literal["lightgcn", "simgcl", "gccf"]
Variant = Literal["base", "con", "gen"]
ReconstructionLoss = Literal["infonce", "cosine"]


@dataclass(frozen=True)
class GraphCFConfig:
    """One graph-CF run: backbone, RLMRec variant and training (the paper's d = 32, batch 4,096, Adam 1e-3)."""

    backbone: Backbone = setting("lightgcn", "lightgcn, simgcl or gccf.")
    variant: Variant = "base"
    dim: int = 32
    n_layers: int = 3
    batch_size: int = 4096
    lr: float = setting(1e-3, "Adam's learning rate.")
    l2: float = setting(1e-4, "L2 on the batch's layer-0 rows, over the batch size.")
    # SimGCL's own contrastive term (ignored by the other backbones).
    noise_eps: float = setting(0.1, "SimGCL: norm of each layer's noise.")
    cl_weight: float = setting(0.2, "SimGCL: weight of its view-contrastive term.")
    cl_temperature: float = 0.2
    # RLMRec's alignment: Con's InfoNCE weight and Gen's reconstruction weight, the authors' released
    # defaults for LightGCN (kd_weight 1e-2, recon_weight 1e-1); the paper itself states neither.
    alignment_weight: float = setting(0.01, "RLMRec-Con: weight of the InfoNCE alignment.")
    reconstruction_weight: float = setting(0.1, "RLMRec-Gen: weight of the masked reconstruction (the authors' "
                                           "recon_weight; Con's is 10x smaller).")
    temperature: float = setting(0.2, "RLMRec: InfoNCE temperature.")
    mask_ratio: float = setting(0.1, "RLMRec-Gen: share of nodes masked per step.")
    reconstruction_loss: ReconstructionLoss = "infonce"
    # Nodes per kind in one step's alignment InfoNCE (sampled from the batch's, or the masked, nodes): on
    # CPU the full batch's 3.5k users x 6k items logits made a Beauty Con epoch 10x a base one.
    max_alignment_nodes: int | None = setting(1024, "RLMRec: nodes per kind in one step's alignment InfoNCE, "
                                              "sampled (null = all the batch's / masked ones).")
    shuffle_profiles: bool = setting(False, "Control: every node gets another node's vector.")
    exclude_history: bool = setting(True, "Served scores leave out the history's items.")
    max_epochs: int = setting(400, MAX_EPOCHS)
    max_steps: int | None = setting(None, STEP_BUDGET)
    eval_every: int = setting(5, EVAL_EVERY)
    patience: int = setting(5, PATIENCE)
    seed: int = 42


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


def normalized_adjacency(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray,
                         self_loops: bool = False) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph with edges (users[k], items[k]), as a sparse COO tensor.

    `items` are 1-based item indices. With `self_loops`, A + I and its degrees (GCCF); without, nodes
    with no edge keep a zero row (their embedding does not propagate, as in LightGCN).
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
    n_nodes = n_users + n_items
    rows = np.concatenate([user_nodes, item_nodes])
    cols = np.concatenate([item_nodes, user_nodes])
    if self_loops:
        rows = np.concatenate([rows, np.arange(n_nodes)])
        cols = np.concatenate([cols, np.arange(n_nodes)])
    degree = np.bincount(rows, minlength=n_nodes).astype(np.float64)
    inverse_sqrt = np.zeros(n_nodes)
    inverse_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    values = (inverse_sqrt[rows] * inverse_sqrt[cols]).astype(np.float32)
    indices = torch.from_numpy(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(values), (n_nodes, n_nodes),
                                   check_invariants=True).coalesce()


class LightGCN(nn.Module):
    """ID embeddings of users and items smoothed over the graph by `n_layers` parameter-free propagations."""

    self_loops = False

    def __init__(self, n_users: int, n_items: int, dim: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        if min(n_users, n_items, dim) < 1 or n_layers < 0:
            raise ValueError("n_users, n_items and dim must be positive; n_layers must be >= 0")
        self.n_users, self.n_items, self.n_layers, self.dim = n_users, n_items, n_layers, dim
        self.embedding = nn.Embedding(n_users + n_items, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)

    @property
    def output_dim(self) -> int:
        """Width of the propagated node vectors (what scores and the alignment read)."""
        return self.dim

    def graph(self, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
        """The normalized adjacency this backbone propagates over, for edges (user rows, item indices), as CSR.

        CSR, not COO: a propagation and its backward took 0.18 s against 0.26 s on amazon-beauty's graph
        (1 thread), and every training step propagates the whole graph.
        """
        adjacency = normalized_adjacency(self.n_users, self.n_items, users, items, self.self_loops)
        with warnings.catch_warnings():
            # torch flags CSR as beta; sparse.mm with a dense right-hand side and its backward are what we use.
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return adjacency.to_sparse_csr()

    def layers(self, adjacency: torch.Tensor, layer0: torch.Tensor | None = None,
               noise: torch.Generator | None = None) -> list[torch.Tensor]:
        """The layer-0..L node tables; `layer0` replaces the ego table (RLMRec-Gen's masked one)."""
        current = self.embedding.weight if layer0 is None else layer0
        tables = [current]
        for _ in range(self.n_layers):
            current = torch.sparse.mm(adjacency, current)
            tables.append(current)
        return tables

    def propagate(self, adjacency: torch.Tensor, layer0: torch.Tensor | None = None) -> torch.Tensor:
        """(n_users + n_items, output_dim) mean of the layer-0..L embeddings."""
        return torch.stack(self.layers(adjacency, layer0)).mean(dim=0)

    def auxiliary_loss(self, adjacency: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
        """The backbone's own self-supervised term on the batch's users and items (none for LightGCN)."""
        return torch.zeros(())

    def split(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A node table cut into (users, items); items row i - 1 holds item index i."""
        return nodes[: self.n_users], nodes[self.n_users :]

    def bpr_loss(self, nodes: torch.Tensor, users: torch.Tensor, positives: torch.Tensor,
                 negatives: torch.Tensor, l2: float) -> torch.Tensor:
        """BPR over propagated `nodes` for (user row, positive item index, negative item index) triples,
        plus `l2` times the batch's layer-0 squared norms over the batch size."""
        user_vectors, item_vectors = self.split(nodes)
        # F.embedding, not tensor[index]: a batch repeats users thousands of times, and the indexing
        # backward accumulated those rows in no fixed order with 2 threads (reruns differed); the
        # embedding backward is deterministic.
        u, p = F.embedding(users, user_vectors), F.embedding(positives - 1, item_vectors)
        n = F.embedding(negatives - 1, item_vectors)
        ranking = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
        ego = self.embedding.weight
        squared = (F.embedding(users, ego).pow(2).sum() + F.embedding(self.n_users + positives - 1, ego).pow(2).sum()
                   + F.embedding(self.n_users + negatives - 1, ego).pow(2).sum()) / 2
        return ranking + l2 * squared / len(users)

    @torch.no_grad()
    def score_users(self, nodes: torch.Tensor, user_rows: torch.Tensor) -> torch.Tensor:
        """(batch, n_items + 1) dot-product scores of the users' propagated vectors (column 0 = -inf)."""
        user_vectors, item_vectors = self.split(nodes)
        scores = user_vectors[user_rows] @ item_vectors.T
        padding = torch.full((len(user_rows), 1), float("-inf"), dtype=scores.dtype)
        return torch.cat([padding, scores], dim=1)


class SimGCL(LightGCN):
    """LightGCN's propagation (layers 1..L averaged) plus a contrastive term between two noise-perturbed views."""

    def __init__(self, n_users: int, n_items: int, dim: int = 32, n_layers: int = 3, noise_eps: float = 0.1,
                 cl_weight: float = 0.2, cl_temperature: float = 0.2) -> None:
        super().__init__(n_users, n_items, dim, n_layers)
        if n_layers < 1:
            raise ValueError("SimGCL averages layers 1..L: it needs n_layers >= 1")
        self.noise_eps, self.cl_weight, self.cl_temperature = noise_eps, cl_weight, cl_temperature

    def layers(self, adjacency: torch.Tensor, layer0: torch.Tensor | None = None,
               noise: torch.Generator | None = None) -> list[torch.Tensor]:
        """Layer-0..L tables; with a `noise` generator, each propagated layer gets sign-aligned noise of norm eps."""
        current = self.embedding.weight if layer0 is None else layer0
        tables = [current]
        for _ in range(self.n_layers):
            current = torch.sparse.mm(adjacency, current)
            if noise is not None:
                direction = F.normalize(torch.rand(current.shape, generator=noise), dim=-1)
                current = current + torch.sign(current) * direction * self.noise_eps
            tables.append(current)
        return tables

    def propagate(self, adjacency: torch.Tensor, layer0: torch.Tensor | None = None) -> torch.Tensor:
        """(n_users + n_items, dim) mean of layers 1..L, unperturbed (what BPR and scoring read)."""
        return torch.stack(self.layers(adjacency, layer0)[1:]).mean(dim=0)

    def auxiliary_loss(self, adjacency: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
        """cl_weight x InfoNCE between two perturbed views, over the batch's distinct users and distinct items."""
        views = [torch.stack(self.layers(adjacency, noise=generator)[1:]).mean(dim=0) for _ in range(2)]
        user_rows = torch.unique(users)
        item_rows = self.n_users + torch.unique(items) - 1
        return self.cl_weight * (info_nce(views[0][user_rows], views[1][user_rows], self.cl_temperature)
                                 + info_nce(views[0][item_rows], views[1][item_rows], self.cl_temperature))


class GCCF(LightGCN):
    """LR-GCCF: linear propagation with self-loops; the output concatenates the layer-0..L embeddings."""

    self_loops = True

    @property
    def output_dim(self) -> int:
        """dim x (L + 1): the layers are concatenated, not averaged."""
        return self.dim * (self.n_layers + 1)

    def propagate(self, adjacency: torch.Tensor, layer0: torch.Tensor | None = None) -> torch.Tensor:
        """(n_users + n_items, dim x (L + 1)) concatenation of the layer-0..L embeddings."""
        return torch.cat(self.layers(adjacency, layer0), dim=1)


def build_backbone(n_users: int, n_items: int, config: GraphCFConfig) -> LightGCN:
    """The configured backbone, freshly initialised from the current torch seed."""
    if config.backbone == "lightgcn":
        return LightGCN(n_users, n_items, config.dim, config.n_layers)
    if config.backbone == "simgcl":
        return SimGCL(n_users, n_items, config.dim, config.n_layers, config.noise_eps, config.cl_weight,
                      config.cl_temperature)
    if config.backbone == "gccf":
        return GCCF(n_users, n_items, config.dim, config.n_layers)
    raise ValueError(f"unknown graph backbone {config.backbone!r}")


class GraphCFRecommender(nn.Module):
    """A trained backbone with the training graph it propagates over: scores users by row, serves vectors.

    The training edges are buffers, so a checkpoint holds the graph and reloads to the same scores.
    In eval mode the propagated table is computed once and reused until the next `train()` or
    `load_state_dict()` call.
    """

    def __init__(self, backbone: LightGCN, edge_users: np.ndarray, edge_items: np.ndarray,
                 config: GraphCFConfig) -> None:
        super().__init__()
        users, items = distinct_pairs(np.asarray(edge_users, dtype=np.int64), np.asarray(edge_items, dtype=np.int64))
        self.backbone, self.config = backbone, config
        self.n_users, self.n_items = backbone.n_users, backbone.n_items
        self.register_buffer("edge_users", torch.from_numpy(users))
        self.register_buffer("edge_items", torch.from_numpy(items))
        self.adjacency = backbone.graph(users, items)
        self._nodes: torch.Tensor | None = None
        # Loaded weights (the best epoch's, a checkpoint's) must never be scored through an older cache.
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_nodes", None))

    def train(self, mode: bool = True) -> GraphCFRecommender:
        """Switch mode; the cached propagation is dropped (the weights may change or have changed)."""
        self._nodes = None
        return super().train(mode)

    @torch.no_grad()
    def nodes(self) -> torch.Tensor:
        """The propagated (n_users + n_items, output_dim) table, cached in eval mode."""
        if self._nodes is not None and not self.training:
            return self._nodes
        nodes = self.backbone.propagate(self.adjacency)
        if not self.training:
            self._nodes = nodes
        return nodes

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray) -> torch.Tensor:
        """(batch, n_items + 1) scores of user rows `users`; with `exclude_history`, their histories' items -inf."""
        users = np.asarray(users, dtype=np.int64)
        if len(histories) != len(users):
            raise ValueError(f"{len(histories)} histories for {len(users)} user rows")
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"user rows outside 0..{self.n_users - 1}: a graph model scores only its training users")
        scores = self.backbone.score_users(self.nodes(), torch.from_numpy(users))
        if self.config.exclude_history and len(histories):
            rows = np.repeat(np.arange(len(histories)), [len(history) for history in histories])
            items = np.concatenate([np.asarray(history, dtype=np.int64) for history in histories])
            scores[torch.from_numpy(rows), torch.from_numpy(items)] = float("-inf")
        return scores

    @torch.no_grad()
    def catalogue_matrix(self) -> torch.Tensor:
        """(n_items, output_dim) propagated item vectors; row j is item index j + 1."""
        return self.backbone.split(self.nodes())[1]

    @torch.no_grad()
    def user_matrix(self) -> torch.Tensor:
        """(n_users, output_dim) propagated user vectors, in training row order."""
        return self.backbone.split(self.nodes())[0]
