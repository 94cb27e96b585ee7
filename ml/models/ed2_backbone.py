"""ED2's backbones: where the index tokens sit in the LM's vocabulary, the tiny Llama, SmolLM2 and LoRA.

`tiny`: a randomly initialised `LlamaForCausalLM` over a vocabulary of the reserved ids, the template
words and the index tokens only. `smollm2`: the packaged SmolLM2-135M, loaded offline, with END and
the index tokens appended to its vocabulary (input embedding and tied LM head resized), fine-tuned
fully or by LoRA on the attention projections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ml.codes.trie import END, N_SPECIAL, PAD
from ml.data.ed2_instructions import template_words, tokenize_pieces, word_split
from ml.models.ed2_config import ED2Config
from ml.models.residual_quantizer import NO_SUFFIX

EntityKind = Literal["item", "user"]


@dataclass(frozen=True)
class IndexTokens:
    """A block of LM token ids for one entity kind: `levels` x `size` code tokens, then `size` suffix tokens."""

    first: int
    levels: int
    size: int

    @property
    def count(self) -> int:
        """Token ids in the block."""
        return (self.levels + 1) * self.size

    def token(self, level: int, code: int) -> int:
        """The LM id of code `code` at `level` (level == levels: suffix `code`)."""
        if not (0 <= level <= self.levels and 0 <= code < self.size):
            raise ValueError(f"no index token for level {level}, code {code}")
        return self.first + level * self.size + code

    def inverse(self, token: int) -> tuple[int, int]:
        """(level, code) of an LM id in this block (level == levels for a suffix); raises outside it."""
        offset = token - self.first
        if not 0 <= offset < self.count:
            raise ValueError(f"token {token} is not in this index block")
        return offset // self.size, offset % self.size

    def entity_tokens(self, codes: np.ndarray, suffix: np.ndarray) -> list[list[int]]:
        """Each entity's index tokens: its levels' code tokens, then its suffix token if it has one."""
        levels = np.arange(self.levels)[None, :]
        tokens = (self.first + levels * self.size + np.asarray(codes)).tolist()
        for row, extra in enumerate(np.asarray(suffix).tolist()):
            if extra != NO_SUFFIX:
                tokens[row].append(self.first + self.levels * self.size + extra)
        return tokens


@dataclass(frozen=True)
class ED2Vocabulary:
    """Where everything sits in the LM's vocabulary: END, the item and user index blocks, the template pieces."""

    size: int
    end: int
    items: IndexTokens
    users: IndexTokens
    pieces: dict[str, list[int]] = field(default_factory=dict)

    @property
    def index_first(self) -> int:
        """First id of the index tokens (items, then users, contiguous)."""
        return self.items.first

    @property
    def index_count(self) -> int:
        """Index tokens of both kinds."""
        return self.items.count + self.users.count

    def block(self, kind: EntityKind) -> IndexTokens:
        """The index block of one entity kind."""
        return self.items if kind == "item" else self.users

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return {"size": self.size, "end": self.end, "items": [self.items.first, self.items.levels, self.items.size],
                "users": [self.users.first, self.users.levels, self.users.size], "pieces": self.pieces}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ED2Vocabulary:
        """The vocabulary a checkpoint stored."""
        return cls(int(data["size"]), int(data["end"]), IndexTokens(*map(int, data["items"])),
                   IndexTokens(*map(int, data["users"])), {k: [int(t) for t in v] for k, v in data["pieces"].items()})


def tiny_vocabulary(levels: int, size: int) -> ED2Vocabulary:
    """The tiny backbone's vocabulary: reserved ids (PAD, SOS, END...), the template words, the index blocks."""
    words = {word: N_SPECIAL + row for row, word in enumerate(template_words())}
    items = IndexTokens(N_SPECIAL + len(words), levels, size)
    users = IndexTokens(items.first + items.count, levels, size)
    pieces = tokenize_pieces(lambda text: [words[word] for word in word_split(text)])
    return ED2Vocabulary(users.first + users.count, END, items, users, pieces)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update B A x * alpha / rank (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / rank)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base output plus the low-rank update."""
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale


def apply_lora(lm: nn.Module, rank: int, alpha: float) -> None:
    """Freeze the LM but its token embeddings (new index rows) and wrap its attention projections in LoRA."""
    for parameter in lm.parameters():
        parameter.requires_grad_(False)
    lm.get_input_embeddings().weight.requires_grad_(True)
    for module in list(lm.modules()):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            child = getattr(module, name, None)
            if isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, rank, alpha))


def tiny_lm_config(config: ED2Config, vocabulary_size: int) -> dict[str, Any]:
    """The `LlamaConfig` fields of the tiny backbone."""
    return {"vocab_size": vocabulary_size, "hidden_size": config.hidden_dim,
            "intermediate_size": config.intermediate_dim, "num_hidden_layers": config.n_layers,
            "num_attention_heads": config.n_heads,
            "num_key_value_heads": config.n_heads, "max_position_embeddings": 2048, "tie_word_embeddings": True,
            "pad_token_id": PAD, "bos_token_id": 1, "eos_token_id": END, "rms_norm_eps": 1e-6}


def build_lm(lm_config: dict[str, Any], config: ED2Config) -> nn.Module:
    """A randomly initialised `LlamaForCausalLM` of `lm_config` (LoRA-wrapped when configured)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    lm = LlamaForCausalLM(LlamaConfig.from_dict(lm_config))
    if config.backbone == "smollm2" and config.finetune == "lora":
        apply_lora(lm, config.lora_rank, config.lora_alpha)
    return lm


def load_smollm2(config: ED2Config, cache_dir: Path) -> tuple[nn.Module, ED2Vocabulary, dict[str, Any]]:
    """The packaged SmolLM2-135M (offline), its vocabulary extended by END and the index tokens, and its config."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from ml.llm.weights import PACKAGED_SMOLLM2, resolve_causal_lm

    folder = resolve_causal_lm(PACKAGED_SMOLLM2, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    lm = LlamaForCausalLM.from_pretrained(str(folder), local_files_only=True)
    base = len(tokenizer)
    items = IndexTokens(base + 1, config.levels, config.codebook_size)
    users = IndexTokens(items.first + items.count, config.levels, config.codebook_size)
    pieces = tokenize_pieces(lambda text: tokenizer(text, add_special_tokens=False).input_ids)
    vocabulary = ED2Vocabulary(users.first + users.count, base, items, users, pieces)
    lm.resize_token_embeddings(vocabulary.size, mean_resizing=False)
    if config.finetune == "lora":
        apply_lora(lm, config.lora_rank, config.lora_alpha)
    return lm, vocabulary, lm.config.to_dict()
