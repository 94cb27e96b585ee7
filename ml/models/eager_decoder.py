"""EAGER's per-stream code decoder, its STT transfer module, and the decoders' teacher-forcing inputs.

The model that owns them, its configuration and decoding are in `ml/models/eager.py`; the losses that
train them in `ml/train/eager_loss.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ml.codes.trie import END, N_SPECIAL, PAD, SOS, SUMMARY, CodeVocabulary, code_block
from ml.models.code_decoder import CodeDecoderStack, KeysValues, SelfAttentionCache

if TYPE_CHECKING:  # the config's module imports this one
    from ml.models.eager import EAGERConfig


class StreamDecoder(nn.Module):
    """One stream's code decoder: token + position embeddings, causal decoder blocks, tied output, summary head."""

    def __init__(self, vocabulary: CodeVocabulary, feature_dim: int, config: EAGERConfig) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        d = config.hidden_dim
        self.token_embedding = nn.Embedding(vocabulary.size, d, padding_idx=PAD)
        # SOS, depth codes, SUMMARY: the longest decoder input.
        self.position_embedding = nn.Embedding(vocabulary.depth + 2, d)
        self.stack = CodeDecoderStack(config.decoder_layers, d, config.n_heads, config.feedforward_dim,
                                      config.dropout)
        self.summary_head = nn.Linear(d, feature_dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.token_embedding.weight[PAD].zero_()

    def forward(self, tokens: torch.Tensor, kv: KeysValues, memory_padding: torch.Tensor, group: int = 1,
                cache: SelfAttentionCache | None = None) -> torch.Tensor:
        """(rows, t, d) hidden states of decoder inputs (rows, t); rows = users x `group` (a user's beams).

        With `cache` (incremental decoding), only the positions after the cached ones are computed and
        returned.
        """
        start = 0 if cache is None else cache.length
        tokens = tokens[:, start:]
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        hidden = self.token_embedding(tokens) + self.position_embedding(positions).unsqueeze(0)
        # Causal: PAD only ever follows a path, so no real position attends to one.
        return self.stack(hidden, kv, memory_padding, group=group, cache=cache)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits over the whole vocabulary (output layer tied to the token embeddings)."""
        return hidden @ self.token_embedding.weight.T

    def block_logits(self, hidden: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
        """(N, k) logits of hidden states (N, d) over each row's block of k tokens, from token bases[r] on.

        Every block starts at N_SPECIAL + j * k, so the token table past the special tokens is a stack
        of (k, d) blocks: rows are grouped by block and each group meets only its own block's rows.
        Training pads the groups into one batched product (a few autograd nodes, no gather of a (k, d)
        block per row); decoding, whose groups are large and skewed, multiplies group by group.
        """
        k = self.vocabulary.branching
        weight = self.token_embedding.weight
        stacked = weight[N_SPECIAL: N_SPECIAL + (weight.shape[0] - N_SPECIAL) // k * k].view(-1, k, weight.shape[1])
        blocks = code_block(bases, k)
        order = torch.argsort(blocks, stable=True)
        unique, counts = torch.unique_consecutive(blocks[order], return_counts=True)
        logits = hidden.new_empty(len(hidden), k)
        if not torch.is_grad_enabled():
            for block, rows in zip(unique.tolist(), order.split(counts.tolist()), strict=True):
                logits[rows] = hidden[rows] @ stacked[block].T
            return logits
        group = torch.repeat_interleave(torch.arange(len(unique), device=hidden.device), counts)
        slot = torch.arange(len(hidden), device=hidden.device) - torch.repeat_interleave(counts.cumsum(0) - counts,
                                                                                         counts)
        padded = hidden.new_zeros(len(unique), int(counts.max()), hidden.shape[1]).index_put(
            (group, slot), hidden[order])
        products = torch.bmm(padded, stacked[unique].transpose(1, 2))  # (groups, rows, k)
        return logits.index_put((order,), products[group, slot])


class TransferModule(nn.Module):
    """STT: a bidirectional decoder over [CLS, behaviour tokens] attending to the semantic summary output."""

    def __init__(self, behaviour: StreamDecoder, config: EAGERConfig) -> None:
        super().__init__()
        d = config.hidden_dim
        self.position_embedding = nn.Embedding(behaviour.vocabulary.depth + 1, d)
        self.stack = CodeDecoderStack(config.stt_layers, d, config.n_heads, config.feedforward_dim, config.dropout)
        self.recognition_head = nn.Linear(d, 1)
        nn.init.normal_(self.position_embedding.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, token_embedding: nn.Embedding, semantic: torch.Tensor) -> torch.Tensor:
        """(batch, t, d) outputs of [CLS, codes...] tokens (batch, t) given semantic summaries (batch, d)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = token_embedding(tokens) + self.position_embedding(positions).unsqueeze(0)
        memory = semantic.unsqueeze(1)
        no_padding = torch.zeros(len(tokens), 1, dtype=torch.bool, device=tokens.device)
        return self.stack(hidden, self.stack.memory_kv(memory), no_padding, key_padding=tokens == PAD)



def decoder_inputs(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forcing (inputs, targets, summary positions) of token paths (batch, depth + 1) that end at END or PAD.

    inputs = [SOS, codes..., SUMMARY, PAD...]; targets = [codes..., END (if the paths have one), PAD...]
    aligned so that position j predicts the (j + 1)-th path token; the summary token sits right after
    the last code.
    """
    batch = tokens.shape[0]
    sos = torch.full((batch, 1), SOS, dtype=tokens.dtype, device=tokens.device)
    pad = torch.full((batch, 1), PAD, dtype=tokens.dtype, device=tokens.device)
    inputs = torch.cat([sos, tokens], dim=1)
    summary_at = ((tokens == END) | (tokens == PAD)).int().argmax(dim=1) + 1
    inputs[torch.arange(batch, device=tokens.device), summary_at] = SUMMARY
    targets = torch.cat([tokens, pad], dim=1)
    return inputs, targets, summary_at
