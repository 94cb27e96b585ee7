"""SASRec (Kang & McAuley, 2018): an ID-only causal self-attention model of the next item.

Item embeddings (row 0 = padding) plus learned position embeddings feed `n_layers` pre-norm Transformer
blocks (`nn.TransformerEncoderLayer`, norm_first=True) and a final LayerNorm; an item's score is the dot
product of the last hidden state with the same item embedding table (tied input and output weights).

Choices the paper leaves open, and what we do:

- Activation: ReLU, as in the paper's point-wise feed-forward network (two d x d layers), so that this
  baseline is the published model rather than the GELU variant of BERT4Rec-style re-implementations.
- Sequences are left-padded, and positions count back from the most recent item (the last input
  always has position max_len - 1), so a batch may be cut to its longest sequence without changing
  any output.
- Masking: one boolean mask per (sequence, head) joins the causal mask and the key padding mask. Each
  position may always attend to itself: a left-padded row would otherwise have every key masked and
  produce NaN, which then leaks into real positions through 0 * NaN. Padded positions are zeroed after
  every block, as in the original implementation.
- Embeddings start from N(0, 0.02) (as in RecBole), with no sqrt(d) input scaling; the Transformer
  layers keep PyTorch's defaults.
- Defaults are the recipe of a careful plain SASRec-CE that reaches test R@10 0.085 / N@10 0.042 on
  the Beauty split (1 head, dropout 0.5, Adam at a constant 2e-3, batches of 256 users, validation
  every 2 epochs, patience 5 validations); `max_steps` bounds it for quick runs.
- `score()` adds `item_bias`, zero unless a post-hoc popularity adjustment is set after training
  (`ml/train/popularity_adjustment.py`); the training loss never sees it.
- The item table is read through `item_table()`, so a subclass (`ml/models/content_sasrec.py`) can
  build it from content without touching the sequence encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.models.selection_grids import DEFAULT_POPULARITY_BETAS
from ml.models.settings import (
    DEVICE,
    EPOCH_CAPPING_STEP_BUDGET,
    EVAL_EVERY,
    EVAL_EVERY_STEPS,
    MAX_EPOCHS,
    PATIENCE,
    SCORED_USERS,
    setting,
)

# Learning-rate schedules (`ml/train/schedules.py`): constant = linear warm-up over warmup_steps, then flat;
# inverse_sqrt = warm-up, then lr x sqrt(warmup / step) (the Transformer's, EAGER's authors'); cosine =
# warm-up, then cosine decay to 0 at the step budget.
LRSchedule = Literal["constant", "inverse_sqrt", "cosine"]


def check_lr_schedule(schedule: str, warmup_steps: int) -> None:
    """Raise a ValueError for an unknown schedule, or an inverse-square-root one without warm-up."""
    if schedule not in get_args(LRSchedule):
        raise ValueError(f"lr_schedule must be one of {get_args(LRSchedule)}, got {schedule!r}")
    if schedule == "inverse_sqrt" and warmup_steps < 1:
        raise ValueError("lr_schedule inverse_sqrt needs warmup_steps >= 1 (it decays from the warm-up's end)")
# "position": every real position of an epoch weighs the same (the default); "batch_mean": each batch's
# own mean, so a batch of short sequences counts as much as one of long ones (the biased weighting
# shipped before; kept only so the training benchmark can A/B it).
LossWeighting = Literal["position", "batch_mean"]
# "users": batch_size users per batch; "positions": about batch_size x (mean positions per user) real
# positions per batch, short sequences in wide batches and long ones in narrow ones (token budget).
Batching = Literal["users", "positions"]
# After training: "none" serves the raw scores; "balanced" subtracts beta x log(1 + training count) from every
# item's score, beta chosen on validation (`ml/train/popularity_adjustment.py`).
PopularityAdjustment = Literal["none", "balanced"]


@dataclass(frozen=True)
class SASRecConfig:
    """Model size, optimization and early-stopping settings of SASRec."""

    hidden_dim: int = 64
    n_layers: int = 2
    n_heads: int = 1
    max_len: int = setting(50, "History items the encoder reads (the most recent ones).")
    dropout: float = 0.5
    lr: float = 2e-3
    lr_schedule: LRSchedule = setting("constant", "constant = lr throughout; cosine = linear warm-up over "
                                      "warmup_steps, then cosine decay to 0 at max_epochs (stepped per batch).")
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 256
    # Measured on Beauty: with "users" batching, bucketing learns less per epoch (most positions land in a
    # few long-sequence steps); with "positions" batching every step carries about the same number of
    # positions, and an epoch costs about 0.6x a shuffled one.
    bucket_batches: int = setting(1, "1 = plain shuffle; above 1, sort by length within buckets of this many "
                                  "batches (narrower batches, faster epochs; the loss weighs positions alike).")
    batching: Batching = setting("users", "users = batch_size users per batch; positions = about as many real "
                                 "positions per batch, in length-sorted buckets (no padding).")
    loss_weighting: LossWeighting = setting("position", "position = every real position weighs the same; "
                                            "batch_mean = the old biased per-batch mean (A/B only).")
    eval_batch_size: int = setting(1024, SCORED_USERS)
    max_epochs: int = setting(200, MAX_EPOCHS)
    max_steps: int | None = setting(None, EPOCH_CAPPING_STEP_BUDGET)
    patience: int = setting(5, PATIENCE)
    eval_every: int = setting(2, EVAL_EVERY)
    eval_every_steps: int | None = setting(None, EVAL_EVERY_STEPS)
    seed: int = 0
    device: str = setting("auto", DEVICE)
    # The plain SASRec is the fixed ID-only reference (issue 11): raw scores unless asked otherwise.
    popularity_adjustment: PopularityAdjustment = setting(
        "none", "none = serve raw scores (the ID-only reference); balanced = subtract beta x log(1 + training "
        "count), beta chosen on balanced validation NDCG@10 (all and long-tail users).")
    popularity_betas: tuple[float, ...] = setting(DEFAULT_POPULARITY_BETAS, "The grid `balanced` chooses beta "
                                                  "from (0 = no adjustment).")
    # Menon et al.'s logit-adjusted loss: the training softmax sees score + tau x log(1 + training count), the
    # served score does not, so the model learns scores with that much popularity taken out.
    train_logit_adjustment: float = setting(0.0, "tau of a logit-adjusted training loss (softmax over score + "
                                            "tau x log(1 + training count)); 0 = plain.")

    def __post_init__(self) -> None:
        # A config read back from JSON (checkpoint manifests, MLflow params) holds a list.
        object.__setattr__(self, "popularity_betas", tuple(float(beta) for beta in self.popularity_betas))
        for name in ("hidden_dim", "n_layers", "n_heads", "max_len", "batch_size", "bucket_batches",
                     "eval_batch_size", "max_epochs", "patience", "eval_every", "max_steps", "eval_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.hidden_dim % self.n_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        check_lr_schedule(self.lr_schedule, self.warmup_steps)
        if self.batching not in get_args(Batching):
            raise ValueError(f"batching must be one of {get_args(Batching)}, got {self.batching!r}")
        if self.loss_weighting not in get_args(LossWeighting):
            raise ValueError(f"loss_weighting must be one of {get_args(LossWeighting)}, got {self.loss_weighting!r}")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if not np.isfinite(self.train_logit_adjustment) or self.train_logit_adjustment < 0:
            raise ValueError(f"train_logit_adjustment must be finite and >= 0, got {self.train_logit_adjustment}")
        if self.popularity_adjustment not in get_args(PopularityAdjustment):
            raise ValueError(f"popularity_adjustment must be one of {get_args(PopularityAdjustment)}, "
                             f"got {self.popularity_adjustment!r}")
        if not self.popularity_betas or any(not np.isfinite(beta) or beta < 0 for beta in self.popularity_betas):
            raise ValueError(f"popularity_betas must be a non-empty grid of finite values >= 0, "
                             f"got {self.popularity_betas}")


def log_popularity(train_counts: np.ndarray) -> torch.Tensor:
    """(n_items + 1,) float32 log(1 + training count) per item index, 0 at the padding index 0."""
    counts = np.asarray(train_counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"need a vector of non-negative training counts, got shape {counts.shape}")
    values = torch.as_tensor(np.log1p(counts), dtype=torch.float32)
    values[0] = 0.0  # padding is never ranked
    return values


def left_pad(histories: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """(batch, width) int64 of each history's last `max_len` items, right-aligned, 0 before them.

    The width is the longest (truncated) history of the batch, at least 1.
    """
    width = max(1, min(max_len, max((len(items) for items in histories), default=1)))
    padded = np.zeros((len(histories), width), dtype=np.int64)
    for row, items in enumerate(histories):
        recent = np.asarray(items[-width:], dtype=np.int64)
        if len(recent):
            padded[row, width - len(recent):] = recent
    return torch.from_numpy(padded)


class SASRec(nn.Module):
    """Causal self-attention over a user's item sequence; scores = last hidden state x item embeddings."""

    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError("n_items must be at least 1")
        self.config = config  # what a checkpoint rebuilds it from (also when it is part of a blend)
        self.n_items = n_items
        self.max_len = config.max_len
        self.n_heads = config.n_heads
        self.item_embedding = nn.Embedding(n_items + 1, config.hidden_dim, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.hidden_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=config.hidden_dim,
                nhead=config.n_heads,
                dim_feedforward=config.hidden_dim,
                dropout=config.dropout,
                activation="relu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(config.hidden_dim)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        # Added to every item's score at inference (never in the training loss): -beta x log(1 + training
        # count) once a popularity adjustment is set, zero otherwise. A buffer, so checkpoints carry it.
        self.register_buffer("item_bias", torch.zeros(n_items + 1))

    @property
    def device(self) -> torch.device:
        """Device the parameters live on."""
        return self.item_embedding.weight.device

    def attention_mask(self, padding: torch.Tensor) -> torch.Tensor:
        """(batch * heads, L, L) bool, True = may not attend: later positions and padding, never oneself."""
        length = padding.shape[1]
        future = torch.ones(length, length, dtype=torch.bool, device=padding.device).triu(diagonal=1)
        blocked = future.unsqueeze(0) | padding.unsqueeze(1)
        blocked &= ~torch.eye(length, dtype=torch.bool, device=padding.device)
        return blocked.repeat_interleave(self.n_heads, dim=0)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, L, hidden_dim) of left-padded item indices (batch, L), L <= max_len."""
        return self.encode(inputs, self.item_table())

    def encode(self, inputs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Hidden states of left-padded item indices, reading item vectors from `table` (n_items + 1, d)."""
        # F.embedding, not table[inputs]: its CPU backward sums each row's gradients in a fixed order, where
        # advanced indexing's accumulate is multi-threaded and not bit-reproducible (reruns must match).
        return self.encode_vectors(F.embedding(inputs, table, padding_idx=0), inputs == 0)

    def encode_vectors(self, vectors: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, L, d) of left-padded input vectors (batch, L, d); `padding` is True at pads."""
        length = vectors.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequences of length {length} exceed max_len {self.max_len}")
        positions = torch.arange(self.max_len - length, self.max_len, device=vectors.device)
        hidden = vectors + self.position_embedding(positions).unsqueeze(0)
        hidden = self.dropout(hidden).masked_fill(padding.unsqueeze(-1), 0.0)
        mask = self.attention_mask(padding)
        for layer in self.layers:
            hidden = layer(hidden, src_mask=mask).masked_fill(padding.unsqueeze(-1), 0.0)
        return self.final_norm(hidden)

    def item_table(self) -> torch.Tensor:
        """(n_items + 1, hidden_dim) item vectors, row 0 = padding: the input table and the output scores."""
        return self.item_embedding.weight

    def item_logits(self, hidden: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of real items 1..n (column j = item j + 1) for hidden states (..., hidden_dim)."""
        table = self.item_table() if table is None else table
        return hidden @ table[1:].T

    def user_embedding(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(batch, hidden_dim) state after the last item of each history: the query of the item dot product."""
        return self(left_pad(histories, self.max_len).to(self.device))[:, -1]

    def catalogue_matrix(self) -> torch.Tensor:
        """(n_items, hidden_dim) item vectors; row j is item index j + 1 (the padding row is dropped)."""
        return self.item_table()[1:]

    def set_popularity_adjustment(self, train_counts: np.ndarray, beta: float) -> None:
        """Serve scores minus beta x log(1 + the item's training count) (Menon et al.'s post-hoc logit adjustment)."""
        if np.shape(train_counts) != (self.n_items + 1,):
            raise ValueError(f"need ({self.n_items + 1},) training counts, got shape {np.shape(train_counts)}")
        if not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be finite and >= 0, got {beta}")
        self.item_bias.copy_(-beta * log_popularity(train_counts))

    def has_item_bias(self) -> bool:
        """Whether a popularity adjustment is set (the served score is not a plain dot product)."""
        return bool(self.item_bias.any())

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(batch, n_items + 1) scores of the next item after each history (column 0 = padding), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            table = self.item_table()
            hidden = self.encode(left_pad(histories, self.max_len).to(self.device), table)[:, -1]
            return hidden @ table.T + self.item_bias
        finally:
            self.train(was_training)
