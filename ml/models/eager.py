"""EAGER (Wang et al., KDD 2024): a two-stream generative recommender over behaviour and semantic item codes.

One shared Transformer encoder reads the user's item history (item-ID embeddings, learned positions
counted back from the latest item, as SASRec's). Each stream (behaviour codes from the ID model's
item table, semantic codes from the text embeddings; hierarchical k-means, `ml/codes/`) has its own
Transformer decoder that generates the next item's code path token by token, cross-attending to the
encoder states. The losses (`ml/train/eager_loss.py`) add the paper's two auxiliary tasks:

- GCT, the global contrastive task: a learnable summary token after each decoder's path; its output,
  through a linear head, is pulled to the target item's global feature of that stream;
- STT, the semantic-guided transfer task: an auxiliary bidirectional Transformer over the behaviour
  code tokens, cross-attending to the semantic decoder's summary output, that reconstructs masked
  behaviour tokens and recognises whether a behaviour path matches the semantic summary.

The per-stream decoder, the STT module and the decoders' teacher-forcing inputs are in
`ml/models/eager_decoder.py`.

Inference: per stream, constrained beam search over the real items' paths (`ml/codes/trie.py`); the
2k predictions are merged (`merge`) by path log-probability (the paper's confidence), an item kept
once, or, as the authors' released `rerank` does, the union of the beams is re-scored by the sum of
both streams' path log-probabilities.

Choices the paper leaves open, and what we do:

- Decoder tokens (`last_level`): `per_parent`, as the authors' released code, gives the children of
  every node that holds a leaf a block of k tokens of their own (`vocabulary_and_tokens`), so the
  last token names one item and its softmax runs over the parent's children only; the other
  levels' codes are tokens of their level. Training scores every position by the softmax over
  the node's real children, the distribution constrained beam search decodes from (the authors
  also softmax over the parent's k slots, their unused ones included). `shared`, the ablation and
  the earlier default, makes code c of level l one token wherever it appears, ends every path with
  END (hierarchical k-means gives paths of different depths), and trains a softmax over the whole
  vocabulary. The output layer is tied to the token embeddings either way.
- Heads: 4 of width 32 at the paper's hidden size 128; feed-forward 4x hidden; pre-LayerNorm
  blocks (stable with the warm-up the paper uses); dropout 0.1. The decoder blocks
  (`ml/models/code_decoder.py`) project the encoder states into cross-attention keys and values once
  per user, not once per beam and step, which makes beam search over 20 beams affordable on CPU.
- Global features are frozen buffers, each L2-normalised and scaled by sqrt(dim), so every
  component has unit RMS whatever the encoder's scale: the smooth-L1 distillation then works in its
  quadratic-to-linear range for both streams alike.
- The STT module is one bidirectional decoder layer that shares the behaviour decoder's token
  embeddings; its memory is the semantic summary token's output, so the transfer reaches the
  semantic decoder, as in the paper's figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from ml.codes.trie import (
    PAD,
    BeamResult,
    ChildBlocks,
    CodeTrie,
    constrained_beam_search,
    full_ranking_scores,
    merge_by_confidence,
    vocabulary_and_tokens,
)
from ml.models.code_decoder import KeysValues, SelfAttentionCache
from ml.models.eager_decoder import StreamDecoder, TransferModule, decoder_inputs
from ml.models.sasrec import LRSchedule, check_lr_schedule, left_pad
from ml.models.settings import EVAL_EVERY, EVAL_EVERY_STEPS, MAX_EPOCHS, PATIENCE, WARMUP_LR_SCHEDULE, setting

Stream = Literal["behaviour", "semantic"]
STREAMS: tuple[Stream, ...] = get_args(Stream)
StreamChoice = Literal["both", "behaviour", "semantic"]
# confidence: the streams' beams merged by each item's own path log-probability (an item kept once, its best);
# rerank: the union of the beams re-scored by the sum of both streams' path log-probabilities (the authors'
# `rerank`), so an item both streams find likely rises above one that a single stream is sure of.
MergeRule = Literal["confidence", "rerank"]
# per_parent: each node holding a leaf has its own block of child tokens (the authors'); shared: a code is
# its level's token wherever it appears, and paths end with END (the ablation).
LastLevel = Literal["per_parent", "shared"]


@dataclass(frozen=True)
class EAGERConfig:
    """Model shape, auxiliary tasks, decoding and optimisation settings of EAGER (paper defaults unless noted)."""

    hidden_dim: int = 128
    encoder_layers: int = 1
    decoder_layers: int = setting(4, "Decoder layers per stream.")
    n_heads: int = 4
    feedforward_dim: int = 512
    dropout: float = 0.1
    max_len: int = setting(20, "History items the encoder reads (the paper keeps the last 20).")
    streams: StreamChoice = setting("both", "both, or one stream alone (ablation).")
    last_level: LastLevel = setting("per_parent", "per_parent = every node holding a leaf has its own block of "
                                    "child tokens (the authors'); shared = a code is its level's token wherever it "
                                    "appears, paths end with END (the ablation).")
    gct_weight: float = setting(1.0, "lambda_1: summary-token distillation (0 = off).")
    gct_contrastive_weight: float = setting(0.0, "In-batch InfoNCE on the summary output (off in the paper).")
    gct_temperature: float = 0.1
    stt_weight: float = setting(1.0, "lambda_2: semantic-guided transfer (0 = off; needs both streams).")
    stt_layers: int = 1
    mask_ratio: float = 0.5  # share of behaviour tokens masked for reconstruction
    replace_ratio: float = 0.5  # share of behaviour tokens replaced to make a recognition negative
    # STT costs about a sixth of a step at 1.0; its sums are scaled by 1 / share, so the term's expected size
    # is unchanged.
    stt_row_share: float = setting(1.0, "Share of each batch's examples STT runs on (a random subset); below 1 "
                                   "saves part of STT's cost.")
    beam_size: int = setting(20, "Beam per stream; the merged ranking holds up to twice this.")
    merge: MergeRule = setting("confidence", "confidence = the beams merged by each item's own path "
                               "log-probability; rerank = their union re-scored by the sum of both streams' "
                               "log-probabilities (the authors' rerank).")
    lr: float = 1e-3
    warmup_steps: int = 500
    # The authors' is inverse_sqrt (after a 2,000-step warm-up); constant keeps the quick preset's measured figures.
    lr_schedule: LRSchedule = setting("constant", WARMUP_LR_SCHEDULE)
    weight_decay: float = 0.0
    batch_size: int = 256
    # Most histories are far shorter than max_len, so bucketed batches are narrow; every example still weighs
    # 1 / batch_size in the loss, whatever batch it lands in.
    bucket_batches: int = setting(32, "1 = plain shuffle; above 1, sort by history length within buckets of this "
                                  "many batches (narrower batches, same loss weights).")
    eval_batch_size: int = setting(256, "Users beam-searched at once.")
    max_epochs: int = setting(200, MAX_EPOCHS)
    max_steps: int | None = setting(None, "Optimizer-step budget; training stops after exactly this many steps, "
                                    "mid-epoch if need be (null = max_epochs only).")
    eval_every: int = setting(1, EVAL_EVERY)
    eval_every_steps: int | None = setting(None, EVAL_EVERY_STEPS)
    patience: int = setting(5, PATIENCE)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "encoder_layers", "decoder_layers", "n_heads", "feedforward_dim", "max_len",
                     "stt_layers", "beam_size", "batch_size", "bucket_batches", "eval_batch_size", "max_epochs",
                     "max_steps", "eval_every", "eval_every_steps", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.hidden_dim % self.n_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by n_heads ({self.n_heads})")
        if self.streams not in get_args(StreamChoice):
            raise ValueError(f"streams must be one of {get_args(StreamChoice)}, got {self.streams!r}")
        if self.merge not in get_args(MergeRule):
            raise ValueError(f"merge must be one of {get_args(MergeRule)}, got {self.merge!r}")
        if self.last_level not in get_args(LastLevel):
            raise ValueError(f"last_level must be one of {get_args(LastLevel)}, got {self.last_level!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        for name in ("mask_ratio", "replace_ratio", "stt_row_share"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")
        for name in ("gct_weight", "gct_contrastive_weight", "stt_weight", "weight_decay", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.gct_temperature <= 0:
            raise ValueError("gct_temperature must be positive")
        check_lr_schedule(self.lr_schedule, self.warmup_steps)

    @property
    def active_streams(self) -> tuple[Stream, ...]:
        """The streams this model generates."""
        return STREAMS if self.streams == "both" else (self.streams,)

    @property
    def uses_stt(self) -> bool:
        """Whether the semantic-guided transfer task runs (it needs both streams)."""
        return self.stt_weight > 0 and self.streams == "both"


@dataclass(frozen=True)
class StreamCodes:
    """One stream's item codes (row i = item index i + 1; -1 past each path's end) and global features."""

    codes: np.ndarray  # (n_items, depth) int
    features: np.ndarray  # (n_items, feature_dim) float
    branching: int

    def __post_init__(self) -> None:
        if self.codes.ndim != 2 or self.features.ndim != 2 or len(self.codes) != len(self.features):
            raise ValueError("codes and features need one row per item")
        if not np.isfinite(self.features).all():
            raise ValueError("features hold NaN or infinite values")

    @property
    def lengths(self) -> np.ndarray:
        """Path length of each item (codes are contiguous from level 1)."""
        return (np.asarray(self.codes) >= 0).sum(axis=1)


def unit_rms(features: np.ndarray) -> np.ndarray:
    """Each row L2-normalised and scaled by sqrt(dim): unit RMS per component, whatever the encoder's scale."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return (features / norms * np.sqrt(features.shape[1])).astype(np.float32)


class EAGER(nn.Module):
    """Shared history encoder, one code decoder per stream, and the STT module (see the module doc)."""

    def __init__(self, n_items: int, streams: dict[str, StreamCodes], config: EAGERConfig) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError("n_items must be at least 1")
        missing = set(config.active_streams) - set(streams)
        if missing:
            raise ValueError(f"no codes for stream(s) {sorted(missing)}")
        self.n_items = n_items
        self.config = config
        self.max_len = config.max_len
        d = config.hidden_dim
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, d)
        layer = nn.TransformerEncoderLayer(d, config.n_heads, config.feedforward_dim, config.dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.encoder_layers, enable_nested_tensor=False)
        self.encoder_norm = nn.LayerNorm(d)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.decoders = nn.ModuleDict()
        self.tries: dict[str, CodeTrie] = {}
        self.blocks: dict[str, ChildBlocks] = {}  # per_parent only
        self.stream_codes: dict[str, StreamCodes] = {}
        for stream in config.active_streams:
            codes = streams[stream]
            if len(codes.codes) != n_items:
                raise ValueError(f"{stream} codes have {len(codes.codes)} rows for {n_items} items")
            vocabulary, tokens = vocabulary_and_tokens(codes.codes, codes.lengths, codes.branching,
                                                       per_parent=config.last_level == "per_parent")
            self.tries[stream] = CodeTrie(tokens, vocabulary.size)
            self.stream_codes[stream] = codes
            padded_tokens = np.vstack([np.full((1, tokens.shape[1]), PAD), tokens])  # row 0 = padding item
            if vocabulary.per_parent:
                self.blocks[stream] = self.tries[stream].child_blocks(codes.branching)
                self.register_buffer(f"{stream}_nodes", torch.from_numpy(_prediction_nodes(self.tries[stream],
                                                                                           padded_tokens)),
                                     persistent=False)
                self.register_buffer(f"{stream}_block_base", torch.from_numpy(self.blocks[stream].base),
                                     persistent=False)
                self.register_buffer(f"{stream}_block_mask", self.blocks[stream].mask, persistent=False)
            features = unit_rms(codes.features)
            self.register_buffer(f"{stream}_tokens", torch.from_numpy(padded_tokens), persistent=False)
            self.register_buffer(f"{stream}_features",
                                 torch.from_numpy(np.vstack([np.zeros((1, features.shape[1]), np.float32), features])),
                                 persistent=False)
            self.decoders[stream] = StreamDecoder(vocabulary, features.shape[1], config)
        self.transfer = TransferModule(self.decoders["behaviour"], config) if config.uses_stt else None

    @property
    def device(self) -> torch.device:
        """Device the parameters live on."""
        return self.item_embedding.weight.device

    def item_tokens(self, stream: str, items: torch.Tensor) -> torch.Tensor:
        """(batch, depth + 1) token paths (END-terminated under shared last levels, PAD after) of item indices."""
        return getattr(self, f"{stream}_tokens")[items]

    def item_features(self, stream: str, items: torch.Tensor) -> torch.Tensor:
        """(batch, feature_dim) unit-RMS global features of item indices (batch,)."""
        return getattr(self, f"{stream}_features")[items]

    def path_log_likelihood(self, stream: str, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(batch,) log-probability of each item's path (item indices (batch,)) under the per_parent stream's
        constrained model, from teacher-forced decoder states (batch, t, d): at every position a softmax
        over the node's real children (a forced move adds 0), as beam search scores a path."""
        length = hidden.shape[1]
        tokens = self.item_tokens(stream, items)
        targets = torch.cat([tokens, torch.full_like(tokens[:, :1], PAD)], dim=1)[:, :length]
        nodes = getattr(self, f"{stream}_nodes")[items][:, :length]  # -1 where nothing is predicted
        scored = nodes >= 0
        rows = scored.nonzero(as_tuple=True)[0]
        at = nodes[scored]
        logits = self.decoders[stream].block_logits(hidden[scored], getattr(self, f"{stream}_block_base")[at])
        logits = logits.masked_fill(~getattr(self, f"{stream}_block_mask")[at], float("-inf"))
        labels = self.blocks[stream].slots(targets[scored])
        picked = torch.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
        return torch.zeros(len(items), device=hidden.device, dtype=picked.dtype).index_add(0, rows, picked)

    def encode(self, histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (batch, L, d) and the padding mask (batch, L) of left-padded histories (batch, L)."""
        length = histories.shape[1]
        if length > self.max_len:
            raise ValueError(f"histories of length {length} exceed max_len {self.max_len}")
        padding = histories == 0
        if padding.all(dim=1).any():
            raise ValueError("every history needs at least one item")
        positions = torch.arange(self.max_len - length, self.max_len, device=histories.device)
        hidden = self.item_embedding(histories) + self.position_embedding(positions).unsqueeze(0)
        hidden = self.encoder(hidden, src_key_padding_mask=padding)
        return self.encoder_norm(hidden), padding

    @torch.no_grad()
    def recommend(self, histories: Sequence[np.ndarray], beam_size: int | None = None) -> list[list[tuple[int, float]]]:
        """Per history, items (0-based rows) ranked by merged path log-probability across the streams' beams."""
        was_training = self.training
        self.eval()
        try:
            memory, padding = self.encode(left_pad(histories, self.max_len).to(self.device))
            beams = []
            for stream, decoder in self.decoders.items():
                kv = decoder.stack.memory_kv(memory)  # once per user and layer, shared by every beam and step
                cache = SelfAttentionCache(len(decoder.stack.blocks))

                def step(prefixes: torch.Tensor, width: int, parents: torch.Tensor | None,
                         bases: torch.Tensor | None = None, decoder: StreamDecoder = decoder, kv: KeysValues = kv,
                         cache: SelfAttentionCache = cache) -> torch.Tensor:
                    if parents is not None:
                        cache.reorder(parents.to(self.device))
                    hidden = decoder(prefixes.to(self.device), kv, padding, group=width, cache=cache)[:, -1]
                    return decoder.logits(hidden) if bases is None else decoder.block_logits(hidden,
                                                                                             bases.to(self.device))

                beams.append(constrained_beam_search(step, self.tries[stream], len(histories),
                                                     beam_size or self.config.beam_size, self.blocks.get(stream)))
            if self.config.merge == "confidence" or len(beams) == 1:
                return merge_by_confidence(beams)
            candidates = union_of_beams(beams)
            totals = self.joint_log_probs(memory, padding, candidates)
            # One "beam" of the union, ranked by the summed scores: the confidence merge's ordering and -1 handling.
            return merge_by_confidence([BeamResult(items=candidates, log_probs=totals)])
        finally:
            self.train(was_training)

    def joint_log_probs(self, memory: torch.Tensor, padding: torch.Tensor, candidates: np.ndarray) -> np.ndarray:
        """(users, C) sum over the streams of each candidate's path log-probability (the authors' `rerank` score)."""
        return sum(self.path_log_probs(stream, memory, padding, candidates) for stream in self.decoders)

    @torch.no_grad()
    def candidate_log_likelihood(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        """(users, C) summed streams' log-probability of given items (0-based rows; -1 = none, scored -inf)."""
        was_training = self.training
        self.eval()
        try:
            memory, padding = self.encode(left_pad(histories, self.max_len).to(self.device))
            return self.joint_log_probs(memory, padding, np.asarray(candidates, dtype=np.int64))
        finally:
            self.train(was_training)

    @torch.no_grad()
    def path_log_probs(self, stream: str, memory: torch.Tensor, padding: torch.Tensor,
                       candidates: np.ndarray) -> np.ndarray:
        """(users, C) log-probability of each candidate item's path (0-based rows; -1 = none, scored -inf)
        under the stream's constrained model, given the users' encoder states: the score beam search gives."""
        decoder, trie = self.decoders[stream], self.tries[stream]
        users, width = candidates.shape
        rows = torch.from_numpy(np.maximum(candidates, 0).reshape(-1) + 1).to(self.device)
        inputs, labels, _ = decoder_inputs(self.item_tokens(stream, rows))
        hidden = decoder(inputs, decoder.stack.memory_kv(memory), padding, group=width)
        if stream in self.blocks:
            scores = self.path_log_likelihood(stream, hidden, rows).float().cpu().numpy().reshape(users, width)
            return np.where(candidates >= 0, scores, -np.inf).astype(np.float32)
        logits = decoder.logits(hidden).float().cpu()
        labels = labels.cpu()
        nodes = np.zeros(len(labels), dtype=np.int64)
        total = torch.zeros(len(labels))
        for position in range(labels.shape[1]):
            moving = (labels[:, position] != PAD).numpy() & ~trie.is_leaf(nodes)
            if not moving.any():
                break
            allowed = trie.allowed_mask(nodes[moving])
            log_probs = torch.log_softmax(logits[moving, position].masked_fill(~allowed, float("-inf")), dim=1)
            chosen = labels[moving, position]
            total[torch.from_numpy(moving)] += log_probs.gather(1, chosen.unsqueeze(1)).squeeze(1)
            nodes[moving] = trie.step(nodes[moving], chosen.numpy())
        scores = total.numpy().reshape(users, width)
        return np.where(candidates >= 0, scores, -np.inf).astype(np.float32)

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """(batch, n_items + 1) full-ranking scores: merged beam items first, every other item tied below."""
        return full_ranking_scores(self.recommend(histories), self.n_items)


def union_of_beams(beams: list[BeamResult]) -> np.ndarray:
    """(users, C) the distinct items of every stream's beam per user (first seen first), -1 past each user's own."""
    rows = []
    for items in np.concatenate([beam.items for beam in beams], axis=1):
        seen = list(dict.fromkeys(int(item) for item in items if item >= 0))
        rows.append(seen)
    width = max(1, max(len(row) for row in rows))
    return np.array([row + [-1] * (width - len(row)) for row in rows], dtype=np.int64)


def _prediction_nodes(trie: CodeTrie, tokens: np.ndarray) -> np.ndarray:
    """(rows, depth + 2) the trie node each teacher-forced position predicts from (-1 where it predicts nothing).

    Position j predicts the path's token j from the node its first j tokens reach; positions at or past
    the path's end, and padding rows (all PAD), predict nothing.
    """
    nodes = np.full((len(tokens), tokens.shape[1] + 1), -1, dtype=np.int64)
    current = np.zeros(len(tokens), dtype=np.int64)
    for position in range(tokens.shape[1]):
        moving = tokens[:, position] != PAD
        nodes[moving, position] = current[moving]
        current[moving] = trie.step(current[moving], tokens[moving, position])
    return nodes
