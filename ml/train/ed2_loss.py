"""ED2's training loss: NLL of the answer's index tokens, the quantisers' own losses and the two regulators.

A batch mixes next-item and user-prediction examples. Each example is its prompt followed by its
answer (the target entity's index tokens and END); the NLL is summed over answer tokens and divided
by the nominal batch size, so every answer token weighs the same whatever batch (and bucket) it
lands in. A next-item example in sequence form (`next_item_form: sequences`) also scores each
history item's index tokens after the first, from the separator before them (no END: the next
token is a separator); its item NLL is divided by the mean number of targets per example as well
(`item_targets_per_example`), so a target item weighs what a whole prompt does in the prompt form
and the balance with the user task and the regulators stays as it was.

The quantisers' own losses (reconstruction + commitment) and the token-level regulator run over the
batch's distinct target entities, only while the index is dynamic and not yet frozen (a static index is
frozen from the start, a dynamic one after `max_reassignments`); the
index-level regulator trains the backbone under both index modes. With `latent_pull` > 0 (dynamic
index, prompt form) each spliced or answering entity's index tokens also carry its latent pull
(`ED2.latent_pull`: zero-valued, straight-through), laid out by the prompts' entity spans.
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
class EntitySpan:
    """Where one entity's index tokens sit in a prompt: its kind, 0-based row and [start, stop) columns."""

    kind: EntityKind
    row: int
    start: int
    stop: int


@dataclass(frozen=True)
class ED2Example:
    """One training example: its kind, the prompt's token ids, and the target entity (0-based row)."""

    kind: EntityKind  # the answer's kind: "item" (next item) or "user" (user prediction)
    prompt: list[int]
    target: int
    source: int  # the prompt's subject: the user (next item) or the item (user prediction), 0-based
    spliced: tuple[EntitySpan, ...] = ()  # every entity whose index is in the prompt, and where
    # Sequence form: (column whose state predicts the item's first index token, item row) of each history item
    # after the first; the item's index tokens follow that column in the prompt.
    inner: tuple[tuple[int, int], ...] = ()


def next_item_example(model: ED2, train: Sequence[np.ndarray], user: int, position: int,
                      inner: bool = False) -> ED2Example:
    """The next-item example of training position `position` of `user` (history before it, target at it);
    with `inner`, the sequence form: every history item after the first is a target too."""
    sequence = train[user]
    items = model.entity_tokens("item")
    window = history_window(sequence, position, model.config.max_len)
    prompt = model.builder.next_item(model.entity_tokens("user")[user], [items[item - 1] for item in window])
    owners = [("item", int(item) - 1) for item in window] + [("user", user)]
    # The column before an item's span is the separator after the previous item: its state predicts the item.
    inside = tuple((prompt.spans[index][0] - 1, int(window[index]) - 1) for index in range(1, len(window))) \
        if inner else ()
    return ED2Example("item", prompt.tokens, int(sequence[position]) - 1, user, _spans(owners, prompt.spans),
                      inside)


def user_example(model: ED2, example: UserPredictionExample) -> ED2Example:
    """The user-prediction example of an item, its shown users and the user to predict."""
    users = model.entity_tokens("user")
    prompt = model.builder.user_prediction(model.entity_tokens("item")[example.item - 1],
                                           [users[user] for user in example.context])
    owners = [("item", example.item - 1)] + [("user", user) for user in example.context]
    return ED2Example("user", prompt.tokens, example.target, example.item - 1, _spans(owners, prompt.spans))


def _spans(owners: Sequence[tuple[str, int]], spans: Sequence[tuple[int, int]]) -> tuple[EntitySpan, ...]:
    """The entity spans of a spliced prompt, the owners listed in splice order."""
    return tuple(EntitySpan(kind, row, start, stop)  # type: ignore[arg-type]
                 for (kind, row), (start, stop) in zip(owners, spans, strict=True))


@dataclass
class LatentPulls:
    """A batch's latent pulls (`ED2.latent_pull`): per distinct entity, and laid out over the prompts' index tokens."""

    rows: dict[tuple[str, int], int]  # (kind, entity row) -> row of `vectors`
    vectors: torch.Tensor  # (distinct entities, width), zero-valued
    offsets: torch.Tensor  # (batch, columns, width): each spliced entity's pull on its M code tokens
    levels: int

    @classmethod
    def of(cls, model: ED2, examples: Sequence[ED2Example], shape: tuple[int, ...]) -> LatentPulls:
        """The pulls of every entity spliced into, or answering, a batch of `shape` (batch, columns) inputs."""
        keys = sorted({(span.kind, span.row) for example in examples for span in example.spliced}
                      | {(example.kind, example.target) for example in examples})
        rows = {key: index for index, key in enumerate(keys)}
        parts = []
        for kind in ("item", "user"):
            entities = [row for key_kind, row in keys if key_kind == kind]
            if entities:
                parts.append(model.latent_pull(kind, torch.as_tensor(entities, device=model.device)))
        vectors = torch.cat(parts)
        levels = model.config.levels
        # A span's first M columns are its code tokens; a suffix token after them has no codeword, so no pull.
        where = [(batch, span.start + level, rows[(span.kind, span.row)]) for batch, example in enumerate(examples)
                 for span in example.spliced for level in range(levels)]
        offsets = torch.zeros(*shape, vectors.shape[1], device=vectors.device, dtype=vectors.dtype)
        if where:
            batch, column, source = (torch.as_tensor(values, device=vectors.device)
                                     for values in zip(*where, strict=True))
            offsets = offsets.index_put((batch, column), vectors[source])
        return cls(rows, vectors, offsets, levels)

    def answers(self, examples: Sequence[ED2Example], answer_rows: Sequence[tuple[int, int]],
                chosen: Sequence[int]) -> torch.Tensor:
        """(len(chosen), width) the answering entity's pull at each chosen answer position (zero past its codes)."""
        pulls = []
        zero = torch.zeros_like(self.vectors[0])
        for index in chosen:
            row, column = answer_rows[index]
            example = examples[row]
            level = column - (len(example.prompt) - 1)
            pulls.append(self.vectors[self.rows[(example.kind, example.target)]] if level < self.levels else zero)
        return torch.stack(pulls)


@dataclass
class ED2Losses:
    """The total loss and each term's value (for the training log)."""

    total: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


def _capped(rows: list[int], cap: int) -> torch.Tensor:
    """The distinct rows, at most `cap` of them (the first ones in sorted order: deterministic)."""
    return torch.as_tensor(sorted(set(rows))[:cap], dtype=torch.int64)


def ed2_losses(model: ED2, examples: Sequence[ED2Example], nominal_batch: int,
               item_targets_per_example: float = 1.0, index_frozen: bool = False) -> ED2Losses:
    """Answer NLL (sum over answer tokens / nominal batch; next-item targets also / `item_targets_per_example`),
    plus the quantiser and regulator terms (those that train the index only while it is dynamic and not frozen)."""
    config = model.config
    # A frozen dynamic index (`max_reassignments` reached) learns at rate 0: its terms would be computed for nothing.
    index_trains = config.index == "dynamic" and not index_frozen
    device = model.device
    table = model.index_table()
    item_block = model.vocabulary.block("item")
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
        for column, item in example.inner:  # its index tokens, without END (a separator follows them)
            for offset, target in enumerate(answer_targets(model.entity_tokens("item")[item], item_block)[:-1]):
                answer_rows.append((row, column + offset))
                answer_kinds.append("item")
                targets.append(target)
    ids, mask = pad_right([sequence[:-1] for sequence in sequences], device)
    pulls = LatentPulls.of(model, examples, ids.shape) if index_trains and config.latent_pull > 0 else None
    hidden = model.hidden_states(ids, mask, table=table, offsets=None if pulls is None else pulls.offsets)
    picked = hidden[torch.as_tensor([r for r, _ in answer_rows]), torch.as_tensor([c for _, c in answer_rows])]
    kinds = np.asarray(answer_kinds)
    target_tensor = torch.as_tensor(targets, dtype=torch.int64, device=device)
    terms: dict[str, float] = {}
    nll = torch.zeros((), device=device)
    for kind in ("item", "user"):
        chosen = torch.from_numpy(np.flatnonzero(kinds == kind)).to(device)
        if len(chosen):
            logits = model.answer_logits(picked[chosen], kind, table)  # type: ignore[arg-type]
            if pulls is not None:  # the target's code-token logits carry its latent's pull (value unchanged)
                pull = pulls.answers(examples, answer_rows, chosen.tolist())
                logits = logits.scatter_add(1, target_tensor[chosen].unsqueeze(1),
                                            (picked[chosen] * pull).sum(dim=1, keepdim=True))
            kind_nll = F.cross_entropy(logits, target_tensor[chosen], reduction="sum")
            terms[f"nll_{kind}"] = float(kind_nll.detach()) / len(chosen)
            nll = nll + (kind_nll / item_targets_per_example if kind == "item" else kind_nll)
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
        if index_trains:
            own, token = quantizer_losses(model, kind, rows)  # type: ignore[arg-type]
            total = total + own + config.token_regulator_weight * token
            terms[f"quantizer_{kind}"], terms[f"token_regulator_{kind}"] = float(own.detach()), float(token.detach())
        if config.index_regulator_weight > 0 and len(rows) > 1:
            index = model.index_regulator(kind, rows, table)  # type: ignore[arg-type]
            total = total + config.index_regulator_weight * index
            terms[f"index_regulator_{kind}"] = float(index.detach())
    return ED2Losses(total, terms)
