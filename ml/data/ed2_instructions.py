"""ED2's heterogeneous instructions: natural-language words with the users' and items' index tokens spliced in.

Two tasks, both read from the train split only (validation and test targets never enter a prompt):

- next item (the paper's sequential recommendation instruction): "Based on the historical
  interaction sequence: <item>, <item>, ..., predict the most suitable item for user <user>?"
  then the target item's index tokens;
- user prediction (the paper's high-order co-purchase task): "The item <item> is historically
  interacted with by the following users: <user>, <user>, .... Could you please predict another
  user who may be interested in this item?" then the index tokens of another user of that item.

An example names rows (user, position; item, target user, context users), not tokens: the prompt is
spliced from the code tables current at the step it is trained, since the dynamic index re-assigns
codes during training. The word pieces are tokenised once (by the backbone's tokenizer, or the tiny
backbone's word vocabulary) and kept as id lists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# The fixed word pieces of both templates, in the order they are spliced.
NEXT_ITEM_PIECES = {
    "next_intro": "Based on the historical interaction sequence:",
    "next_ask": ", predict the most suitable item for user",
    "next_end": "?",
}
USER_TASK_PIECES = {
    "user_intro": "The item",
    "user_middle": "is historically interacted with by the following users:",
    "user_ask": ". Could you please predict another user who may be interested in this item?",
}
SEPARATOR = "separator"
PIECES = {**NEXT_ITEM_PIECES, **USER_TASK_PIECES, SEPARATOR: ","}


def template_words() -> list[str]:
    """Every whitespace-separated word of the templates, sorted (the tiny backbone's word vocabulary)."""
    return sorted({word for text in PIECES.values() for word in word_split(text)})


def word_split(text: str) -> list[str]:
    """The tiny backbone's tokenisation: whitespace-separated words, a leading comma or full stop its own word."""
    words: list[str] = []
    for word in text.split():
        if len(word) > 1 and word[0] in ",.":
            words.extend([word[0], word[1:]])
        else:
            words.append(word)
    return words


def tokenize_pieces(tokenize: Callable[[str], list[int]]) -> dict[str, list[int]]:
    """Every template piece as token ids, through `tokenize`."""
    return {name: list(tokenize(text)) for name, text in PIECES.items()}


@dataclass(frozen=True)
class InstructionBuilder:
    """Splices index tokens into the tokenised templates (`pieces`: piece name -> token ids)."""

    pieces: dict[str, list[int]]

    def __post_init__(self) -> None:
        missing = set(PIECES) - set(self.pieces)
        if missing:
            raise ValueError(f"template pieces missing: {sorted(missing)}")

    def _spliced(self, parts: Sequence[str | Sequence[int]]) -> SplicedPrompt:
        """Template pieces (by name) and entities (token lists) joined in order, with each entity's span."""
        tokens: list[int] = []
        spans: list[tuple[int, int]] = []
        for part in parts:
            if isinstance(part, str):
                tokens.extend(self.pieces[part])
            else:
                spans.append((len(tokens), len(tokens) + len(part)))
                tokens.extend(part)
        return SplicedPrompt(tokens, tuple(spans))

    def _listed(self, entities: Sequence[Sequence[int]]) -> list[str | Sequence[int]]:
        parts: list[str | Sequence[int]] = []
        for position, entity in enumerate(entities):
            if position:
                parts.append(SEPARATOR)
            parts.append(entity)
        return parts

    def next_item(self, user: Sequence[int], history: Sequence[Sequence[int]]) -> SplicedPrompt:
        """The next-item prompt of one user (their index tokens) and history (each item's index tokens).

        Spans: the history items' in order, then the user's.
        """
        if not history:
            raise ValueError("a next-item prompt needs at least one history item")
        return self._spliced(["next_intro", *self._listed(history), "next_ask", user, "next_end"])

    def user_prediction(self, item: Sequence[int], users: Sequence[Sequence[int]]) -> SplicedPrompt:
        """The user-prediction prompt of one item (its index tokens) and some of its users (theirs).

        Spans: the item's, then the shown users' in order.
        """
        if not users:
            raise ValueError("a user-prediction prompt needs at least one user")
        return self._spliced(["user_intro", item, "user_middle", *self._listed(users), "user_ask"])


@dataclass(frozen=True)
class SplicedPrompt:
    """A prompt's token ids and the [start, stop) span of each entity spliced into it, in splice order."""

    tokens: list[int]
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class NextItemExamples:
    """One example per training position after the first: user row, and the position of the target in train[user]."""

    users: np.ndarray  # (n,) int64
    positions: np.ndarray  # (n,) int64, >= 1

    def __len__(self) -> int:
        return len(self.users)


def next_item_examples(train: Sequence[np.ndarray]) -> NextItemExamples:
    """Every (user, position >= 1) of the training sequences: history = train[user][:position], target at position."""
    users = [np.full(len(sequence) - 1, user, dtype=np.int64)
             for user, sequence in enumerate(train) if len(sequence) > 1]
    positions = [np.arange(1, len(sequence), dtype=np.int64) for sequence in train if len(sequence) > 1]
    if not users:
        return NextItemExamples(np.zeros(0, np.int64), np.zeros(0, np.int64))
    return NextItemExamples(np.concatenate(users), np.concatenate(positions))


def sequence_examples(train: Sequence[np.ndarray], max_len: int) -> NextItemExamples:
    """One example per window of `max_len` + 1 items, each training position >= 1 a target exactly once.

    A window ends at target position e (its prompt is e's, history = the `max_len` items before e);
    the other targets are the history's items after its first, trained inside the same sequence.
    Windows end at the last position, then `max_len` earlier, and so on: a user of at most
    `max_len` + 1 training items is one example.
    """
    users, positions = [], []
    for user, sequence in enumerate(train):
        ends = np.arange(len(sequence) - 1, 0, -max_len, dtype=np.int64)[::-1]
        users.append(np.full(len(ends), user, dtype=np.int64))
        positions.append(ends)
    if not users or not sum(len(ends) for ends in positions):
        return NextItemExamples(np.zeros(0, np.int64), np.zeros(0, np.int64))
    return NextItemExamples(np.concatenate(users), np.concatenate(positions))


def history_window(sequence: np.ndarray, position: int, max_len: int) -> np.ndarray:
    """The last `max_len` items before `position` (item indices, oldest first)."""
    return sequence[max(0, position - max_len):position]


@dataclass(frozen=True)
class ItemUsers:
    """Per item index (1..n_items), the training users who interacted with it (sorted rows), CSR-packed."""

    offsets: np.ndarray  # (n_items + 2,) int64; users of item i are users[offsets[i]:offsets[i + 1]]
    users: np.ndarray  # int64 user rows

    def of(self, item: int) -> np.ndarray:
        """The user rows of one item index."""
        return self.users[self.offsets[item]:self.offsets[item + 1]]


def item_users(train: Sequence[np.ndarray], n_items: int) -> ItemUsers:
    """Which users interacted with each item in the training split (a user counted once per item)."""
    pairs = {(int(item), user) for user, sequence in enumerate(train) for item in sequence}
    items = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    counts = np.bincount(items[:, 0], minlength=n_items + 1) if len(items) else np.zeros(n_items + 1, np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ItemUsers(offsets, items[:, 1].copy())


@dataclass(frozen=True)
class UserPredictionExample:
    """An item, a user of it to predict, and other users of it to show."""

    item: int
    target: int
    context: tuple[int, ...]


def sample_user_predictions(item_sets: ItemUsers, count: int, context_size: int,
                            rng: np.random.Generator) -> list[UserPredictionExample]:
    """`count` user-prediction examples: an interaction drawn uniformly, its user the target, others as context."""
    sizes = np.diff(item_sets.offsets)
    eligible = np.flatnonzero(sizes >= 2)  # an item needs another user to show
    if not len(eligible) or count <= 0:
        return []
    weights = sizes[eligible] / sizes[eligible].sum()  # each training interaction equally likely
    examples = []
    for item in rng.choice(eligible, size=count, p=weights):
        users = item_sets.of(int(item))
        target = int(users[rng.integers(len(users))])
        others = users[users != target]
        shown = rng.choice(others, size=min(context_size, len(others)), replace=False)
        examples.append(UserPredictionExample(int(item), target, tuple(int(user) for user in shown)))
    return examples
