"""Pre-LayerNorm Transformer decoder blocks whose cross-attention keys and values are computed once per query user.

A generative recommender decodes a few tokens for many beams of the same user. `nn.TransformerDecoder`
projects the encoder states into keys and values again for every beam and every decoding step; here
`memory_kv` projects them once per user and layer, and the cross-attention of `group` consecutive
rows (a user's beams) reads that user's keys and values directly: queries of one user's beams are
laid side by side, which is exact since cross-attention treats every query token on its own.
Beam search also keeps each block's self-attention keys and values of the decoded positions
(`SelfAttentionCache`), so a step computes only its new token. Attention runs through
`F.scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KeysValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values), each (users, heads, L, dh)


class SelfAttentionCache:
    """Self-attention keys and values of the positions decoded so far, per block (incremental decoding)."""

    def __init__(self, n_blocks: int) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_blocks

    @property
    def length(self) -> int:
        """Positions held (0 when empty)."""
        first = self.layers[0]
        return 0 if first is None else int(first[0].shape[2])

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep, for each new row, the cache of the row it extends (beams are re-ranked between steps)."""
        self.layers = [None if layer is None else (layer[0][rows], layer[1][rows]) for layer in self.layers]


class DecoderBlock(nn.Module):
    """Self-attention (causal or over non-padding keys), cross-attention to encoder states, feed-forward."""

    def __init__(self, dim: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.self_norm, self.cross_norm, self.feed_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_qkv, self.self_out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.cross_q, self.cross_kv, self.cross_out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.feed_in, self.feed_out = nn.Linear(dim, feedforward), nn.Linear(feedforward, dim)
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        batch, heads, length, width = x.shape
        return x.transpose(1, 2).reshape(batch, length, heads * width)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This block's cross-attention keys and values of encoder states (users, L, d)."""
        keys, values = self.cross_kv(memory).chunk(2, dim=-1)
        return self._split(keys), self._split(values)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], memory_padding: torch.Tensor,
                key_padding: torch.Tensor | None = None, group: int = 1,
                cache: SelfAttentionCache | None = None, layer: int = 0) -> torch.Tensor:
        """(rows, t, d) outputs; rows = users x `group`; `key_padding` None = causal self-attention.

        With `cache`, `x` holds only the positions after the cached ones; their keys and values are
        appended to the cache's entry `layer`, and each attends to every earlier position and itself.
        """
        p = self.dropout if self.training else 0.0
        q, k, v = (self._split(part) for part in self.self_qkv(self.self_norm(x)).chunk(3, dim=-1))
        if cache is not None:
            past = cache.layers[layer]
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            cache.layers[layer] = (k, v)
            new, total = q.shape[2], k.shape[2]
            allowed = torch.ones(new, total, dtype=torch.bool, device=x.device).tril(diagonal=total - new)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        elif key_padding is None:
            attended = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=~key_padding[:, None, None, :], dropout_p=p)
        x = x + self.drop(self.self_out(self._merge(attended)))
        rows, length, dim = x.shape
        queries = self.cross_q(self.cross_norm(x)).reshape(rows // group, group * length, dim)
        keys, values = kv
        attended = F.scaled_dot_product_attention(self._split(queries), keys, values,
                                                  attn_mask=~memory_padding[:, None, None, :], dropout_p=p)
        x = x + self.drop(self.cross_out(self._merge(attended).reshape(rows, length, dim)))
        return x + self.drop(self.feed_out(self.drop(F.relu(self.feed_in(self.feed_norm(x))))))


class CodeDecoderStack(nn.Module):
    """`n_layers` decoder blocks and a final LayerNorm."""

    def __init__(self, n_layers: int, dim: int, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, feedforward, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim)

    def memory_kv(self, memory: torch.Tensor) -> KeysValues:
        """Every block's cross-attention keys and values of encoder states (users, L, d)."""
        return [block.memory_kv(memory) for block in self.blocks]

    def forward(self, x: torch.Tensor, kv: KeysValues, memory_padding: torch.Tensor,
                key_padding: torch.Tensor | None = None, group: int = 1,
                cache: SelfAttentionCache | None = None) -> torch.Tensor:
        """(rows, t, d) normalised outputs of input vectors (rows, t, d); see `DecoderBlock.forward`."""
        for layer, (block, block_kv) in enumerate(zip(self.blocks, kv, strict=True)):
            x = block(x, block_kv, memory_padding, key_padding, group, cache, layer)
        return self.norm(x)
