"""ED2's decoding: constrained beam search over the trie of the current item indices, from a next-item prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ml.codes.trie import END, N_SPECIAL, PAD, CodeTrie, constrained_beam_search
from ml.data.ed2_instructions import history_window

if TYPE_CHECKING:
    from ml.models.ed2 import ED2


def item_trie(model: ED2) -> CodeTrie:
    """Prefix trie of the model's current item indices in the decoding space (END, then the item block)."""
    block = model.vocabulary.items
    paths = np.full((model.n_items, model.config.levels + 2), PAD, dtype=np.int64)
    for row, tokens in enumerate(model.entity_tokens("item")):
        paths[row, :len(tokens)] = [N_SPECIAL + token - block.first for token in tokens]
        paths[row, len(tokens)] = END
    return CodeTrie(paths, N_SPECIAL + block.count)


def decoding_logits(answer: torch.Tensor) -> torch.Tensor:
    """(rows, N_SPECIAL + block) trie-space logits of answer logits (rows, 1 + block)."""
    logits = torch.full((len(answer), N_SPECIAL + answer.shape[1] - 1), float("-inf"))
    logits[:, END] = answer[:, 0].float().cpu()
    logits[:, N_SPECIAL:] = answer[:, 1:].float().cpu()
    return logits


def next_item_prompt(model: ED2, user: int, history: np.ndarray) -> list[int]:
    """The next-item instruction of one user row and item-index history (its last max_len items)."""
    items = model.entity_tokens("item")
    window = history_window(np.asarray(history), len(history), model.config.max_len)
    return model.builder.next_item(model.entity_tokens("user")[user], [items[item - 1] for item in window]).tokens


def pad_left(sequences: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of token lists padded on the left with PAD (prompts end in the same column)."""
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), PAD, dtype=torch.int64)
    mask = torch.zeros((len(sequences), width), dtype=torch.int64)
    for row, sequence in enumerate(sequences):
        ids[row, width - len(sequence):] = torch.as_tensor(sequence)
        mask[row, width - len(sequence):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def recommend(model: ED2, histories: Sequence[np.ndarray], user_rows: np.ndarray,
              beam_size: int | None = None) -> list[list[tuple[int, float]]]:
    """Per user, the beam's items (0-based) and their path log-probabilities, best first.

    The prompt runs once per user and its keys and values stay in a cache of one row per user. Each
    beam step then runs every beam's answer tokens so far (at most M + 2) as one packed row per user,
    each beam attending to the prompt and its own earlier tokens only (a block-diagonal mask), and
    crops those tokens from the cache again. Re-running a few answer tokens is far cheaper than
    reordering and growing a per-beam copy of the prompt's cache at every step (the
    `DynamicCache.reorder_cache` way, which spent about half the decoding time copying).
    """
    was_training = model.training
    model.eval()
    try:
        from transformers import DynamicCache

        prompts = [next_item_prompt(model, int(user), history) for user, history in zip(user_rows, histories,
                                                                                       strict=True)]
        ids, mask = pad_left(prompts, model.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        table = model.index_table()
        cache = DynamicCache(config=model.lm.config)
        hidden = model.hidden_states(ids, mask, positions, cache, table)
        first_logits = decoding_logits(model.answer_logits(hidden[:, -1], "item", table))
        n_users, prompt_len = ids.shape
        blocked = torch.finfo(hidden.dtype).min
        prompt_bias = torch.zeros(mask.shape, dtype=hidden.dtype, device=model.device).masked_fill(mask == 0,
                                                                                                  blocked)
        next_position = positions[:, -1] + 1
        block_first = model.vocabulary.items.first

        def step(prefixes: torch.Tensor, width: int, parents: torch.Tensor | None) -> torch.Tensor:
            answer = prefixes[:, 1:].to(model.device)
            length = answer.shape[1]
            if length == 0:
                return first_logits
            # PAD follows a finished beam's END; its row's logits are ignored, any valid id will do.
            lm_ids = torch.where(answer >= N_SPECIAL, answer - N_SPECIAL + block_first, model.vocabulary.end)
            packed = width * length
            beam = torch.arange(packed, device=model.device) // length
            offset = torch.arange(packed, device=model.device) % length
            own = (beam.unsqueeze(1) == beam.unsqueeze(0)) & (offset.unsqueeze(1) >= offset.unsqueeze(0))
            own_bias = torch.zeros(own.shape, dtype=hidden.dtype, device=model.device).masked_fill(~own, blocked)
            bias = torch.cat([prompt_bias.unsqueeze(1).expand(n_users, packed, prompt_len),
                              own_bias.unsqueeze(0).expand(n_users, packed, packed)], dim=2).unsqueeze(1)
            step_positions = next_position.unsqueeze(1) + offset.unsqueeze(0)
            states = model.hidden_states(lm_ids.reshape(n_users, packed), bias, step_positions, cache, table)
            cache.crop(-packed)  # negative: drop the last `packed` tokens (transformers 5)
            last = states.view(n_users, width, length, -1)[:, :, -1].reshape(n_users * width, -1)
            return decoding_logits(model.answer_logits(last, "item", table))

        result = constrained_beam_search(step, model.trie(), len(prompts), beam_size or model.config.beam_size)
        ranked = []
        for items, log_probs in zip(result.items, result.log_probs, strict=True):
            ranked.append([(int(item), float(score)) for item, score in zip(items, log_probs, strict=True)
                           if item >= 0])
        return ranked
    finally:
        model.train(was_training)
