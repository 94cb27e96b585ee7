"""ED2 (WWW 2025): a causal LM that generates the next item's index over a dual dynamic user and item index.

Every item and every user has an M-token index from its own residual quantiser
(`ml/models/residual_quantizer.py`) over its semantic vector. A causal language model
(`transformers`' `LlamaForCausalLM`) reads the instruction of `ml/data/ed2_instructions.py`, with the
user's and the history items' index tokens spliced in, and generates the next item's tokens; an
extended LM head scores the index tokens. Constrained beam search over the valid item indices
(EAGER's trie, `ml/codes/trie.py`; `ml/models/ed2_decoding.py`) ranks items, and the full-ranking scores follow EAGER's
convention (beam items first, the rest tied below), so the one evaluator applies.

Backbones: `tiny` (CPU default), a randomly initialised Llama of a few layers over a vocabulary of
the template words and the index tokens only; `smollm2`, the packaged SmolLM2-135M with the index
tokens appended to its vocabulary (embedding and tied LM head resized), fine-tuned fully or by LoRA
(`ml/models/ed2_backbone.py`).

Choices the paper leaves open, and what we do:

- The dual dynamic index is learnt with the recommender through the token embeddings: the
  embedding of index token (level l, code c) is the LM's own row for it plus a projection of
  codeword c of level l, and the LM head scores index tokens with the same rows (tied). So the
  recommendation loss moves the codewords, and codes re-assigned from the current quantisers (every
  epoch by default) carry what the recommender learnt: the index is dynamic in the paper's sense,
  although the semantic vectors come from the enrichment stage's frozen encoders, not the backbone.
  A suffix token (collisions) has no codeword: its row is the LM's alone. While the recommender
  trains, the quantisers learn at `index_lr` (1e-4), a tenth of their pre-training rate: measured on
  movielens (quick preset, a re-assignment every 100 steps), at 1e-3 each re-assignment changed the
  codes of about 59% of the items and the model scored below the static index (valid N@10 0.0241
  against 0.0259); at 1e-4 about 34% changed and it scored above it (0.0264, test 0.0256 against 0.0210).
- Latent pull (`latent_pull`, off by default): a straight-through estimator that also gives each
  entity's own encoder latent the recommendation loss's gradient for its codewords (values
  unchanged), so the latents themselves move toward where the recommender wants them. Measured on
  movielens (quick preset): at weight 1 the item index collapsed within 100 steps (196 items on one
  code); at 0.1 it churned twice the codes and scored below the default (300 steps, valid N@10
  0.0255 against 0.0289).
- Static index (the ablation): the same quantisers, pre-trained the same way, then frozen; the
  codes never change.
- Multi-granularity token regulator. Index level: in-batch InfoNCE (temperature 0.1, the authors')
  between the mean of the backbone's last hidden states over an entity's index tokens and its
  semantic vector projected to the backbone width. Token level: each quantiser level's input and
  its chosen codeword pulled together, ||r_l - q_l||^2 with gradients to both (the paper's formula;
  the quantiser's own commitment term is the input-side pull alone). Both weigh 1, as the authors
  add them.
- An answer position's softmax runs over its kind's index tokens and END only (the answer is an
  index; constrained decoding renormalises over allowed tokens anyway). For SmolLM2 that also
  avoids a 49k-way output per position.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.codes.trie import PAD, CodeTrie, full_ranking_scores
from ml.data.ed2_instructions import InstructionBuilder
from ml.models import ed2_decoding
from ml.models.contrastive import info_nce
from ml.models.eager import unit_rms
from ml.models.ed2_backbone import ED2Vocabulary, EntityKind, IndexTokens
from ml.models.ed2_config import ED2Config
from ml.models.residual_quantizer import NO_SUFFIX, CodeTable, ResidualQuantizer, check_index_capacity


class ED2(nn.Module):
    """Two residual quantisers, their code tables, the causal LM and the regulators' projections."""

    def __init__(self, item_semantic: np.ndarray, user_semantic: np.ndarray, config: ED2Config, lm: nn.Module,
                 vocabulary: ED2Vocabulary, lm_config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.n_items, self.n_users = len(item_semantic), len(user_semantic)
        if self.n_items < 1 or self.n_users < 1:
            raise ValueError("ED2 needs at least one item and one user")
        for kind, count in (("item", self.n_items), ("user", self.n_users)):
            check_index_capacity(kind, count, config.levels, config.codebook_size)
        self.vocabulary = vocabulary
        self.lm_config = lm_config
        self.builder = InstructionBuilder(vocabulary.pieces)
        self.lm = lm
        width = lm.get_input_embeddings().weight.shape[1]
        # Unit RMS per component whatever the encoder's scale, so the quantisers' MSE terms are O(1).
        self.register_buffer("item_semantic", torch.from_numpy(unit_rms(item_semantic)))
        self.register_buffer("user_semantic", torch.from_numpy(unit_rms(user_semantic)))
        quantizer = config.quantizer()
        self.item_quantizer = ResidualQuantizer(item_semantic.shape[1], quantizer)
        self.user_quantizer = ResidualQuantizer(user_semantic.shape[1], quantizer)
        self.item_projection = nn.Linear(config.latent_dim, width)
        self.user_projection = nn.Linear(config.latent_dim, width)
        self.item_text_projection = nn.Linear(item_semantic.shape[1], width)
        self.user_text_projection = nn.Linear(user_semantic.shape[1], width)
        # The codeword part starts at the LM's embedding scale (std 0.02 per component for a unit-RMS codeword):
        # nn.Linear's default would make it about 10x the LM's own rows and the first logits huge.
        for projection in (self.item_projection, self.user_projection):
            nn.init.normal_(projection.weight, std=0.02 / config.latent_dim ** 0.5)
            nn.init.zeros_(projection.bias)
        for kind, count in (("item", self.n_items), ("user", self.n_users)):
            self.register_buffer(f"{kind}_codes", torch.zeros(count, config.levels, dtype=torch.int64))
            self.register_buffer(f"{kind}_suffix", torch.full((count,), NO_SUFFIX, dtype=torch.int64))
        self._tokens: dict[str, list[list[int]]] = {}
        self._trie: CodeTrie | None = None

    @property
    def device(self) -> torch.device:
        """Device the parameters live on."""
        return self.item_semantic.device

    def quantizer(self, kind: EntityKind) -> ResidualQuantizer:
        """The residual quantiser of one entity kind."""
        return self.item_quantizer if kind == "item" else self.user_quantizer

    def semantic(self, kind: EntityKind) -> torch.Tensor:
        """(n, dim) semantic vectors of one entity kind."""
        return self.item_semantic if kind == "item" else self.user_semantic

    def code_table(self, kind: EntityKind) -> CodeTable:
        """The current code table of one entity kind (collision counts are not kept: 0)."""
        # Copies: on CPU `.numpy()` shares the buffer, which `set_codes` overwrites in place, and a table taken
        # before a re-assignment must keep the old codes (it once made every re-assignment count 0 changes).
        codes = getattr(self, f"{kind}_codes").cpu().numpy().copy()
        suffix = getattr(self, f"{kind}_suffix").cpu().numpy().copy()
        return CodeTable(codes, suffix, int((suffix != NO_SUFFIX).sum()), 0)

    def set_codes(self, kind: EntityKind, table: CodeTable) -> None:
        """Make `table` the current codes of one kind (prompts, targets and the decoding trie follow)."""
        getattr(self, f"{kind}_codes").copy_(torch.from_numpy(table.codes))
        getattr(self, f"{kind}_suffix").copy_(torch.from_numpy(table.suffix))
        self._tokens.pop(kind, None)
        if kind == "item":
            self._trie = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        # Loading weights (early stopping's best epoch, a checkpoint) replaces the code tables too.
        super()._load_from_state_dict(*args, **kwargs)
        self._tokens.clear()
        self._trie = None

    def entity_tokens(self, kind: EntityKind) -> list[list[int]]:
        """Every entity's LM index tokens under the current codes (cached until the codes change)."""
        if kind not in self._tokens:
            table = self.code_table(kind)
            self._tokens[kind] = self.vocabulary.block(kind).entity_tokens(table.codes, table.suffix)
        return self._tokens[kind]

    # -- the backbone over index-aware token vectors -------------------------------------------------

    def index_table(self) -> torch.Tensor:
        """(index tokens, width) codeword part of every index token's vector (zero for suffix tokens)."""
        rows = []
        for quantizer, projection in ((self.item_quantizer, self.item_projection),
                                      (self.user_quantizer, self.user_projection)):
            books = quantizer.codebooks.reshape(-1, self.config.latent_dim)
            rows.append(projection(books))
            rows.append(torch.zeros(self.config.codebook_size, rows[-1].shape[1], device=books.device))
        return torch.cat(rows)

    def token_vectors(self, ids: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """(…, width) input vectors: the LM's embedding, plus the projected codeword for index tokens."""
        table = self.index_table() if table is None else table
        offset = ids - self.vocabulary.index_first
        inside = (offset >= 0) & (offset < self.vocabulary.index_count)
        extra = table[offset.clamp(0, self.vocabulary.index_count - 1)] * inside.unsqueeze(-1)
        return self.lm.get_input_embeddings()(ids) + extra

    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None = None,
                      cache: Any = None, table: torch.Tensor | None = None,
                      offsets: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, t, width) last hidden states of token ids (batch, t) under `mask` (past + new columns).

        `offsets` (batch, t, width), when given, is added to the input vectors (the latent pulls).
        """
        vectors = self.token_vectors(ids, table)
        if offsets is not None:
            vectors = vectors + offsets
        output = self.lm.model(inputs_embeds=vectors, attention_mask=mask, position_ids=positions, cache=cache,
                               use_cache=cache is not None)
        return output.last_hidden_state

    def latent_pull(self, kind: EntityKind, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), width) zero vectors whose gradient reaches each entity's encoder latent (straight-through).

        Added to an entity's index-token vectors and answer logits, it leaves every value as it is, and
        gives the recommendation loss's gradient for the entity's codewords to the entity's own latent
        too, as a straight-through estimator does: the latents move where the recommender wants them, and
        the next re-assignment moves the entity's code with them.
        """
        latent = self.quantizer(kind).encoder(self.semantic(kind)[rows])
        projection = self.item_projection if kind == "item" else self.user_projection
        return F.linear(self.config.latent_pull * (latent - latent.detach()), projection.weight)

    def answer_logits(self, hidden: torch.Tensor, kind: EntityKind, table: torch.Tensor | None = None) -> torch.Tensor:
        """(…, 1 + block) logits over END and one kind's index tokens, through the (extended, tied) LM head."""
        block = self.vocabulary.block(kind)
        table = self.index_table() if table is None else table
        start = block.first - self.vocabulary.index_first
        head = self.lm.get_output_embeddings().weight
        rows = torch.cat([head[self.vocabulary.end:self.vocabulary.end + 1],
                          head[block.first:block.first + block.count] + table[start:start + block.count]])
        return hidden @ rows.T

    # -- regulators -----------------------------------------------------------------------------------

    def index_regulator(self, kind: EntityKind, entities: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """In-batch InfoNCE between the backbone's mean state over each entity's index tokens and its text vector."""
        tokens = [self.entity_tokens(kind)[row] for row in entities.tolist()]
        ids, mask = pad_right(tokens, self.device)
        hidden = self.hidden_states(ids, mask, table=table)
        pooled = (hidden * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True)
        projection = self.item_text_projection if kind == "item" else self.user_text_projection
        return info_nce(pooled, projection(self.semantic(kind)[entities]), self.config.regulator_temperature)

    # -- decoding (`ml/models/ed2_decoding.py`) ------------------------------------------------------

    def trie(self) -> CodeTrie:
        """Prefix trie of the current item indices in the decoding space (cached until the item codes change)."""
        if self._trie is None:
            self._trie = ed2_decoding.item_trie(self)
        return self._trie

    def _decoding_logits(self, answer: torch.Tensor) -> torch.Tensor:
        """(rows, N_SPECIAL + block) trie-space logits of answer logits (rows, 1 + block)."""
        return ed2_decoding.decoding_logits(answer)

    def next_item_prompt(self, user: int, history: np.ndarray) -> list[int]:
        """The next-item instruction of one user row and item-index history (its last max_len items)."""
        return ed2_decoding.next_item_prompt(self, user, history)

    def recommend(self, histories: Sequence[np.ndarray], user_rows: np.ndarray,
                  beam_size: int | None = None) -> list[list[tuple[int, float]]]:
        """Per user, the beam's items (0-based) and their path log-probabilities, best first (beam search)."""
        return ed2_decoding.recommend(self, histories, user_rows, beam_size)

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray], user_rows: np.ndarray | None = None) -> torch.Tensor:
        """(batch, n_items + 1) full-ranking scores: beam items first, every other item tied below."""
        if user_rows is None:
            raise ValueError("ED2 scores a history together with its user's row (the user's index is in the prompt)")
        return full_ranking_scores(self.recommend(histories, np.asarray(user_rows)), self.n_items)


def pad_right(sequences: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of token lists padded on the right with PAD."""
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), PAD, dtype=torch.int64)
    mask = torch.zeros((len(sequences), width), dtype=torch.int64)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)] = torch.as_tensor(sequence)
        mask[row, :len(sequence)] = 1
    return ids.to(device), mask.to(device)


def answer_targets(tokens: Sequence[int], block: IndexTokens) -> list[int]:
    """Answer-vocabulary targets (0 = END, 1 + j = block token j) of an entity's index tokens, END appended."""
    return [1 + token - block.first for token in tokens] + [0]


def quantizer_losses(model: ED2, kind: EntityKind, entities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the quantiser's own loss, the token-level regulator) over some entities of one kind, along their codes."""
    quantizer = model.quantizer(kind)
    vectors = model.semantic(kind)[entities]
    output = quantizer(vectors, getattr(model, f"{kind}_codes")[entities])
    return quantizer.own_loss(vectors, output), F.mse_loss(output.level_inputs, output.chosen)


def code_tables_csv(model: ED2, item_ids: Sequence[str], user_ids: Sequence[str]) -> dict[str, str]:
    """The model's current item and user code tables as CSV texts (id, c1..cM, suffix; -1 = no suffix)."""
    tables = {}
    for kind, ids in (("item", item_ids), ("user", user_ids)):
        table = model.code_table(kind)  # type: ignore[arg-type]
        if len(ids) != len(table.codes):
            raise ValueError(f"{len(ids)} {kind} ids for a table of {len(table.codes)} rows")
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow([f"{kind}_id", *(f"c{level + 1}" for level in range(table.codes.shape[1])), "suffix"])
        writer.writerows([entity, *codes.tolist(), int(extra)]
                         for entity, codes, extra in zip(ids, table.codes, table.suffix, strict=True))
        tables[f"ed2_{kind}_codes.csv"] = text.getvalue()
    return tables