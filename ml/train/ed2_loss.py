"""ED2's training loss: NLL of the answer's index tokens, the quantisers' own losses and the two regulators.

A batch mixes next-item and user-prediction examples. Each example is its prompt followed by its
answer (the target entity's index tokens and END); the NLL is summed over answer tokens and divided
by the nominal batch size, so every answer token weighs the same whatever batch (and bucket) it
lands in. The quantisers' own losses (reconstruction + commitment) and the token-level regulator
run over the batch's distinct target entities, only while the index is dynamic (a static index is
frozen); the index-level regulator trains the backbone under both index modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ml.data.ed2_instructions import UserPredictionExample, history_window
from ml.models.ed2 import ED2, EntityKind, answer_targets, pad_right, quantizer_losses


@dataclass(frozen=True)
class ED2Example:
    """One training example: its kind, the prompt's token ids, and the target entity (0-based row)."""

    kind: EntityKind  # the answer's kind: "item" (next item) or "user" (user prediction)
    prompt: list[int]
    target: int
    source: int  # the prompt's subject: the user (next item) or the item (user prediction), 0-based


def next_item_example(model: ED2, train: Sequence[np.ndarray], user: int, position: int) -> ED2Example:
    """The next-item example of training position `position` of `user` (history before it, target at it)."""
    sequence = train[user]
    items = model.entity_tokens("item")
    window = history_window(sequence, position, model.config.max_len)
    prompt = model.builder.next_item(model.entity_tokens("user")[user], [items[item - 1] for item in window])
    return ED2Example("item", prompt, int(sequence[position]) - 1, user)


def user_example(model: ED2, example: UserPredictionExample) -> ED2Example:
    """The user-prediction example of an item, its shown users and the user to predict."""
    users = model.entity_tokens("user")
    prompt = model.builder.user_prediction(model.entity_tokens("item")[example.item - 1],
                                           [users[user] for user in example.context])
    return ED2Example("user", prompt, example.target, example.item - 1)


@dataclass
class ED2Losses:
    """The total loss and each term's value (for the training log)."""

    total: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


def _capped(rows: list[int], cap: int) -> torch.Tensor:
    """The distinct rows, at most `cap` of them (the first ones in sorted order: deterministic)."""
    return torch.as_tensor(sorted(set(rows))[:cap], dtype=torch.int64)


def ed2_losses(model: ED2, examples: Sequence[ED2Example], nominal_batch: int) -> ED2Losses:
    """Answer NLL (sum over answer tokens / nominal batch), plus the quantiser and regulator terms."""
    config = model.config
    device = model.device
    table = model.index_table()
    sequences, answer_rows, answer_kinds, targets = [], [], [], []
    for row, example in enumerate(examples):
        block = model.vocabulary.block(example.kind)
        answer = model.entity_tokens(example.kind)[example.target]
        sequences.append(example.prompt + answer + [model.vocabulary.end])
        # Hidden state at column j predicts token j + 1: the answer is predicted from the prompt's last column on.
        for offset, target in enumerate(answer_targets(answer, block)):
            answer_rows.append((row, len(example.prompt) - 1 + offset))
            answer_kinds.append(example.kind)
            targets.append(target)
    ids, mask = pad_right([sequence[:-1] for sequence in sequences], device)
    hidden = model.hidden_states(ids, mask, table=table)
    picked = hidden[torch.as_tensor([r for r, _ in answer_rows]), torch.as_tensor([c for _, c in answer_rows])]
    kinds = np.asarray(answer_kinds)
    target_tensor = torch.as_tensor(targets, dtype=torch.int64, device=device)
    terms: dict[str, float] = {}
    nll = torch.zeros((), device=device)
    for kind in ("item", "user"):
        chosen = torch.from_numpy(np.flatnonzero(kinds == kind)).to(device)
        if len(chosen):
            logits = model.answer_logits(picked[chosen], kind, table)  # type: ignore[arg-type]
            kind_nll = F.cross_entropy(logits, target_tensor[chosen], reduction="sum")
            terms[f"nll_{kind}"] = float(kind_nll.detach()) / len(chosen)
            nll = nll + kind_nll
    total = nll / nominal_batch
    terms["nll"] = float(total.detach())
    # The regulators and the quantisers read the batch's distinct answers of each kind, and the next-item
    # prompts' users (their index is in every next-item prompt).
    entities = {
        "item": _capped([e.target for e in examples if e.kind == "item"] + [e.source for e in examples
                                                                            if e.kind == "user"],
                        config.regulator_entities),
        "user": _capped([e.target for e in examples if e.kind == "user"] + [e.source for e in examples
                                                                            if e.kind == "item"],
                        config.regulator_entities),
    }
    for kind, rows in entities.items():
        rows = rows.to(device)
        if config.index == "dynamic":
            own, token = quantizer_losses(model, kind, rows)  # type: ignore[arg-type]
            total = total + own + config.token_regulator_weight * token
            terms[f"quantizer_{kind}"], terms[f"token_regulator_{kind}"] = float(own.detach()), float(token.detach())
        if config.index_regulator_weight > 0 and len(rows) > 1:
            index = model.index_regulator(kind, rows, table)  # type: ignore[arg-type]
            total = total + config.index_regulator_weight * index
            terms[f"index_regulator_{kind}"] = float(index.detach())
    return ED2Losses(total, terms)
