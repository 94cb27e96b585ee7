"""LEARN (Jia et al., 2024): a twin-tower PAL module over frozen LLM item content embeddings.

CEX, the frozen LLM that turns each item's text into a content embedding, runs upstream (the embedding
store); this module is PAL, the preference alignment: a content adapter (Linear content_dim -> hidden),
learned position embeddings, a causal Transformer and a projection to a 64-d, L2-normalized space in
which users and items are compared by dot product (cosine). The user tower runs the Transformer over
the history; the user embedding after item i is the projected state at position i. The item tower
comes in the paper's three variants (`LEARNConfig.item_tower`):

- "shared" (the paper's default, its item tower (a)): the same Transformer, same weights, over the
  target sequence with causal attention; a target position's state is that item's embedding.
- "self_attention_only" (item tower (b)): the same weights, but each item attends only to itself.
- "content_projection" (item tower (c), the "Rec-to-LLM" ablation): the content embedding through the
  shared adapter and projection only, no Transformer (the paper uses E^c itself; its dimension
  differs from the 64-d user space, so the two linear maps are the least that makes it comparable).

At inference all three embed items one by one (a sequence of length 1), so an item's embedding does
not depend on what it was trained next to; `item_matrix` does this for the whole catalogue.

Choices the paper leaves open, and what we do:

- Shape: the paper's Transformer is BERT-base (12 layers, 12 heads, 768 hidden, feed-forward 4x with
  GELU); those are `LEARNConfig`'s defaults. `LEARNConfig.cpu_default()` is the small shape the CPU
  pipeline trains. Layers are pre-norm (norm_first) with a final LayerNorm, as in our SASRec.
- Sequences are right-padded and positions count from the first (oldest) item, so the state after
  item i depends on items 0..i only: it is exactly the user embedding of the prefix ending at i, and a
  length-1 item sequence at inference sits at position 0, like the first item of a training target.
- Input: BERT's embedding LayerNorm over adapted content + position. Without it the adapted unit-norm
  content (about 0.05 per dimension) is drowned by the first random sublayers; with it validation
  recall@10 on amazon-beauty after 3 epochs went from 0.013 to 0.023.
- Initialization: each layer's residual branch starts at zero (`zero_init_residual`, on by default), so
  the untrained towers are a linear map of the content and training starts from content similarity.
  On amazon-beauty (MiniLM content, CPU shape) this reached in 5 epochs the validation recall@10
  (0.033) that random init reached in 10; a learning rate of 3e-3 instead was worse (0.014).
- Masking: one boolean mask per (sequence, head) joins the causal (or diagonal) mask and the key
  padding mask; every position may attend to itself, so no row is fully masked (no NaN).
- The frozen content matrix is a non-persistent buffer: it is an input read from the versioned
  embedding store, so state_dict() holds only learned weights and LEARN(content, config) rebuilds it.
- The temperature is learned as log tau (when learn_temperature), clamped to [0.01, 1] as CLIP clamps
  its logit scale; it only affects training, since ranking by dot product ignores it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.models.settings import DEVICE, EPOCH_CAPPING_STEP_BUDGET, MAX_EPOCHS, PATIENCE, SCORED_USERS, setting

ItemTower = Literal["shared", "self_attention_only", "content_projection"]
ITEM_TOWERS: tuple[str, ...] = ("shared", "self_attention_only", "content_projection")
Attention = Literal["causal", "self"]
TargetSpan = Literal["rest", "next"]
TARGET_SPANS: tuple[str, ...] = ("rest", "next")

MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 1.0


@dataclass(frozen=True)
class LEARNConfig:
    """LEARN's PAL shape, item tower variant, contrastive loss, sampling and optimization settings.

    The defaults are the paper's full size (a BERT-base Transformer); use `cpu_default()` on CPU.
    """

    content_dim: int | None = None  # input width; None = take it from the content embeddings
    hidden_dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    output_dim: int = setting(64, "User and item embedding size (the paper's, fed to the online ranking model).")
    max_len: int = 50
    dropout: float = 0.1
    item_tower: ItemTower = "shared"
    temperature: float = setting(0.05, "Softmax temperature (its initial value when learn_temperature).")
    learn_temperature: bool = True
    # Zero-initialize each Transformer layer's residual branch (attention output and second feed-forward
    # projection), as in T-Fixup / ReZero: the untrained PAL is then adapter -> LayerNorm -> projection of
    # the frozen content, so training starts from content similarity instead of a randomly mixed space.
    zero_init_residual: bool = True
    # Subtract log q(item) from the logits (q = the item's share of training targets): a practitioner's
    # correction for popularity-drawn in-batch negatives that the paper does not mention; see the loss.
    logq_correction: bool = False
    n_history_samples: int = setting(10, "N_h: user positions per user in the loss (only when sampling).")
    n_target_samples: int = setting(10, "N_t: target items per user in the loss (only when sampling).")
    # Two-stage sampling. Off by default: the paper samples on its long industrial sequences only,
    # "no sampling strategy" on the (short) leave-one-out Amazon data; then every position is used.
    sampling: bool = setting(False, "Two-stage sampling (the paper's industrial setting).")
    # How much of the sequence after the split point is the target: "next" (only the item right after it:
    # the paper's Amazon setting, where it notes that item towers (a) and (b) coincide because the target
    # is one item) or "rest" (everything after it, like the paper's industrial month of targets).
    target_span: TargetSpan = setting("next", "Target = only the item after the split point (next: the paper's "
                                      "Amazon setting) or every item after it (rest: its industrial one).")
    # First-stage (uniform) length caps. The paper's industrial 80 / 40 exceed max_len; 40 / 20 keep
    # their 2:1 ratio within it.
    history_cap: int = 40
    target_cap: int = 20
    alpha: float = 10.0  # second-stage position weights w_i = log(alpha + i (beta - alpha) / (N - 1))
    beta: float = 10000.0
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 128
    eval_batch_size: int = setting(1024, SCORED_USERS)
    max_epochs: int = setting(30, MAX_EPOCHS)
    max_steps: int | None = setting(None, EPOCH_CAPPING_STEP_BUDGET)
    eval_every_steps: int | None = setting(None, "Validate every this many steps (rounded up to whole epochs); "
                                           "null = every epoch.")
    patience: int = setting(5, PATIENCE)
    warmup_steps: int = setting(0, "Linear warm-up steps, then cosine decay to 0 over max_epochs.")
    seed: int = 0
    device: str = setting("auto", DEVICE)

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "n_layers", "n_heads", "output_dim", "max_len", "n_history_samples",
                     "n_target_samples", "history_cap", "target_cap", "batch_size", "eval_batch_size",
                     "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_steps", "eval_every_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (or None)")
        if self.content_dim is not None and self.content_dim < 1:
            raise ValueError("content_dim must be at least 1 (or None to take it from the embeddings)")
        if self.hidden_dim % self.n_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.item_tower not in ITEM_TOWERS:
            raise ValueError(f"item_tower must be one of {ITEM_TOWERS}, got {self.item_tower!r}")
        if self.target_span not in TARGET_SPANS:
            raise ValueError(f"target_span must be one of {TARGET_SPANS}, got {self.target_span!r}")
        if not MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must be in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]")
        if self.sampling and (self.history_cap > self.max_len or self.target_cap > self.max_len):
            raise ValueError("with sampling, history_cap and target_cap cannot exceed max_len (the Transformer length)")
        # log(alpha) > 0 keeps every sampling weight positive; beta >= alpha makes recent items weigh more.
        if not 1.0 < self.alpha <= self.beta:
            raise ValueError("need 1 < alpha <= beta")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("need lr > 0, weight_decay >= 0 and warmup_steps >= 0")

    @classmethod
    def cpu_default(cls, **overrides: Any) -> LEARNConfig:
        """The small PAL (128 hidden, 2 layers, 2 heads) that the CPU pipeline trains; `overrides` win."""
        return cls(**{"hidden_dim": 128, "n_layers": 2, "n_heads": 2, **overrides})


def right_pad(sequences: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """(batch, width) int64 of each sequence's last `max_len` items, left-aligned, 0 after them.

    The width is the longest (truncated) sequence of the batch, at least 1.
    """
    width = max(1, min(max_len, max((len(items) for items in sequences), default=1)))
    padded = np.zeros((len(sequences), width), dtype=np.int64)
    for row, items in enumerate(sequences):
        recent = np.asarray(items[-width:], dtype=np.int64)
        padded[row, : len(recent)] = recent
    return torch.from_numpy(padded)


class LEARN(nn.Module):
    """PAL: content adapter -> causal Transformer -> 64-d normalized projection, shared by both towers."""

    def __init__(self, content: torch.Tensor | np.ndarray, config: LEARNConfig) -> None:
        super().__init__()
        content = torch.tensor(np.asarray(content, dtype=np.float32))  # a copy: the caller's array may be read-only
        if content.ndim != 2 or content.shape[0] < 1:
            raise ValueError(f"content must be (n_items, content_dim) with n_items >= 1, got {tuple(content.shape)}")
        if config.content_dim is not None and config.content_dim != content.shape[1]:
            raise ValueError(f"config.content_dim={config.content_dim} but content has {content.shape[1]} columns")
        self.config = config
        self.n_items = content.shape[0]
        self.content_dim = content.shape[1]
        self.max_len = config.max_len
        self.n_heads = config.n_heads
        # Row 0 (padding) is zero, so item index i reads row i.
        self.register_buffer("content", torch.cat([content.new_zeros(1, self.content_dim), content]), persistent=False)
        self.adapter = nn.Linear(self.content_dim, config.hidden_dim)
        self.position_embedding = nn.Embedding(config.max_len, config.hidden_dim)
        # BERT's embedding LayerNorm: the adapted content (unit-norm inputs, so about 0.05 per dimension after
        # the adapter) would otherwise be drowned in the residual stream by the first random sublayers.
        self.input_norm = nn.LayerNorm(config.hidden_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=config.hidden_dim,
                nhead=config.n_heads,
                dim_feedforward=4 * config.hidden_dim,  # BERT's intermediate size
                dropout=config.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(config.hidden_dim)
        self.projection = nn.Linear(config.hidden_dim, config.output_dim)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        if config.zero_init_residual:
            for layer in self.layers:
                for branch_output in (layer.self_attn.out_proj, layer.linear2):
                    nn.init.zeros_(branch_output.weight)
                    nn.init.zeros_(branch_output.bias)
        log_temperature = torch.tensor(math.log(config.temperature))
        if config.learn_temperature:
            self.log_temperature = nn.Parameter(log_temperature)
        else:
            self.register_buffer("log_temperature", log_temperature)
        self._item_cache: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        """Device the parameters live on."""
        return self.adapter.weight.device

    @property
    def temperature(self) -> torch.Tensor:
        """The contrastive temperature tau (a 0-d tensor, differentiable when learned)."""
        return self.log_temperature.exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE)

    def attention_mask(self, padding: torch.Tensor, attention: Attention) -> torch.Tensor:
        """(batch * heads, L, L) bool, True = blocked: later (or all other) positions and padding, never oneself."""
        length = padding.shape[1]
        eye = torch.eye(length, dtype=torch.bool, device=padding.device)
        blocked_positions = eye.logical_not() if attention == "self" else eye.new_ones(length, length).triu(1)
        blocked = (blocked_positions.unsqueeze(0) | padding.unsqueeze(1)) & ~eye
        return blocked.repeat_interleave(self.n_heads, dim=0)

    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(hidden), dim=-1)

    def encode_content(self, content: torch.Tensor, padding: torch.Tensor, attention: Attention) -> torch.Tensor:
        """(batch, L, output_dim) normalized states of content sequences (batch, L, content_dim); padding rows are 0."""
        length = content.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequences of length {length} exceed max_len {self.max_len}")
        positions = torch.arange(length, device=content.device)
        hidden = self.input_norm(self.adapter(content) + self.position_embedding(positions).unsqueeze(0))
        hidden = self.dropout(hidden).masked_fill(padding.unsqueeze(-1), 0.0)
        mask = self.attention_mask(padding, attention)
        for layer in self.layers:
            hidden = layer(hidden, src_mask=mask).masked_fill(padding.unsqueeze(-1), 0.0)
        return self._project(self.final_norm(hidden)).masked_fill(padding.unsqueeze(-1), 0.0)

    def project_content(self, content: torch.Tensor) -> torch.Tensor:
        """Item tower (c): content (..., content_dim) -> adapter -> projection -> normalized (..., output_dim)."""
        return self._project(self.dropout(self.adapter(content)))

    def user_states(self, history: torch.Tensor) -> torch.Tensor:
        """(batch, L, output_dim) user embeddings after each item of right-padded histories (batch, L)."""
        return self.encode_content(self.content[history], history == 0, "causal")

    def item_states(self, target: torch.Tensor) -> torch.Tensor:
        """(batch, L, output_dim) training-time item embeddings of right-padded target sequences, per item tower."""
        padding = target == 0
        if self.config.item_tower == "content_projection":
            return self.project_content(self.content[target]).masked_fill(padding.unsqueeze(-1), 0.0)
        attention: Attention = "causal" if self.config.item_tower == "shared" else "self"
        return self.encode_content(self.content[target], padding, attention)

    def item_matrix(self, content: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """(n, output_dim) inference item embeddings of content rows (n, content_dim), each item on its own."""
        content = content.to(self.device, torch.float32)
        if self.config.item_tower == "content_projection":
            return self.project_content(content)
        chunks = []
        for start in range(0, len(content), batch_size):
            # A batch of length-1 sequences: every item is embedded alone, exactly as one at a time.
            chunk = content[start : start + batch_size].unsqueeze(1)
            padding = torch.zeros(chunk.shape[:2], dtype=torch.bool, device=self.device)
            chunks.append(self.encode_content(chunk, padding, "causal")[:, 0])
        return torch.cat(chunks) if chunks else content.new_zeros(0, self.config.output_dim)

    def catalogue_matrix(self) -> torch.Tensor:
        """(n_items, output_dim) inference embeddings of every item; row j is item index j + 1."""
        return self.item_matrix(self.content[1:])

    def user_embedding(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(batch, output_dim) embedding of each user after the last item of its history (the last max_len count)."""
        if any(len(items) == 0 for items in histories):
            raise ValueError("every history needs at least one item")
        padded = right_pad(histories, self.max_len).to(self.device)
        last = (padded != 0).sum(dim=1) - 1
        states = self.user_states(padded)
        return states[torch.arange(len(padded), device=self.device), last]

    @contextmanager
    def cached_items(self) -> Iterator[torch.Tensor]:
        """Compute the item matrix once (eval mode, no grad) and let `score` reuse it inside the block."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self._item_cache = self.catalogue_matrix()
            yield self._item_cache
        finally:
            self._item_cache = None
            self.train(was_training)

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(batch, n_items + 1) dot-product scores of every item for each history (column 0 = padding = -inf)."""
        was_training = self.training
        self.eval()
        try:
            items = self._item_cache if self._item_cache is not None else self.catalogue_matrix()
            scores = self.user_embedding(histories) @ items.T
            padding = scores.new_full((len(scores), 1), float("-inf"))
            return torch.cat([padding, scores], dim=1)
        finally:
            self.train(was_training)
