"""RLMRec profile prompts: a system prompt asking for JSON, and item and user prompts built from training data.

Only training interactions may reach a prompt: the builders take training rows as input, and
`train_only` refuses anything else, so validation and test targets can never leak into profiles.
Where RLMRec's item prompt uses reviews only when an item has no description, we follow the issue
and give the model every field the dataset has (title, description, attributes, sampled reviews).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Bumped whenever the wording below changes, so cached profiles of an older prompt are regenerated.
PROMPT_VERSION = "rlmrec-v1"

JSON_FORMAT = (
    'Answer with a JSON object only, exactly of the form {"summarization": "...", "reasoning": "..."}. '
    '"summarization" is a short paragraph (at most 100 words); "reasoning" explains briefly how you '
    "arrived at it. Use only the information given; do not invent facts."
)

ITEM_SYSTEM_PROMPT = (
    "You will be given information about an item of a recommender system: its title and, when "
    "available, its description, attributes and user reviews. Summarize what kind of users would "
    "enjoy this item, and why. " + JSON_FORMAT
)

USER_SYSTEM_PROMPT = (
    "You will be given the items a user of a recommender system interacted with, each with its "
    "title, a profile of the item and, when available, the user's review. Summarize what kind of "
    "items this user enjoys, and their tastes. " + JSON_FORMAT
)


class LeakError(ValueError):
    """A non-training interaction was about to enter a prompt."""


@dataclass(frozen=True)
class ChatPrompt:
    """A system and a user message for a chat model, with a stable hash of both."""

    system: str
    user: str

    @property
    def prompt_hash(self) -> str:
        """SHA-256 over the prompt version and both messages (the profile cache key)."""
        payload = json.dumps([PROMPT_VERSION, self.system, self.user], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def messages(self) -> list[dict[str, str]]:
        """OpenAI-style chat messages."""
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


@dataclass(frozen=True)
class Interaction:
    """One interaction of the split mart, as much of it as a prompt needs."""

    user_id: str
    item_id: str
    split: str
    sequence_position: int
    review_text: str | None = None


@dataclass(frozen=True)
class ItemFacts:
    """What the catalog knows about an item."""

    item_id: str
    title: str | None = None
    description: str | None = None
    brand: str | None = None
    categories: Sequence[str] = field(default_factory=tuple)
    attributes: dict[str, str] = field(default_factory=dict)


def has_item_evidence(item: ItemFacts, train: Iterable[Interaction]) -> bool:
    """Whether an item prompt would tell the LLM anything beyond the item's id: a text field or a review.

    A dataset without item text or reviews gives prompts of a bare id; a profile of one is invented,
    so such items are skipped (counted in the asset's metadata) and keep their catalog-text fallback.
    """
    has_text = bool(item.title or item.description or item.brand or item.categories or item.attributes)
    return has_text or any(row.review_text and row.review_text.strip() for row in train)


def has_user_evidence(
    train: Iterable[Interaction], items: dict[str, ItemFacts], item_profiles: dict[str, str]
) -> bool:
    """Whether a user prompt would carry more than item ids: a title, an item profile or a review."""
    return any(
        (row.review_text and row.review_text.strip()) or row.item_id in item_profiles
        or (row.item_id in items and has_item_evidence(items[row.item_id], ()))
        for row in train
    )


def train_only(interactions: Iterable[Interaction]) -> list[Interaction]:
    """The interactions, after checking every one is a training interaction."""
    rows = list(interactions)
    leaked = [row for row in rows if row.split != "train"]
    if leaked:
        raise LeakError(f"{len(leaked)} {leaked[0].split} interaction(s) offered to a prompt, e.g. {leaked[0]}")
    return rows


def _clip(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def sample_reviews(train: Iterable[Interaction], max_reviews: int, seed: int, salt: str) -> list[str]:
    """Up to `max_reviews` non-empty review texts of training interactions, sampled reproducibly."""
    reviews = sorted({row.review_text for row in train_only(train) if row.review_text and row.review_text.strip()})
    rng = random.Random(f"{seed}:{salt}")
    return rng.sample(reviews, max_reviews) if len(reviews) > max_reviews else reviews


def build_item_prompt(
    item: ItemFacts, train: Iterable[Interaction], max_reviews: int = 5, seed: int = 0, max_field_chars: int = 600
) -> ChatPrompt:
    """The item profile prompt: title, description, attributes, and a sample of training reviews."""
    lines = [f"Title: {_clip(item.title, max_field_chars)}" if item.title else f"Item id: {item.item_id}"]
    if item.description:
        lines.append(f"Description: {_clip(item.description, max_field_chars)}")
    attributes = {**({"Brand": item.brand} if item.brand else {}), **item.attributes}
    if item.categories:
        attributes["Categories"] = ", ".join(item.categories)
    lines += [f"{name}: {_clip(str(value), max_field_chars)}" for name, value in attributes.items()]
    reviews = sample_reviews([row for row in train if row.item_id == item.item_id], max_reviews, seed, item.item_id)
    if reviews:
        lines.append("User reviews:")
        lines += [f"- {_clip(review, max_field_chars)}" for review in reviews]
    return ChatPrompt(ITEM_SYSTEM_PROMPT, "\n".join(lines))


def build_user_prompt(
    user_id: str,
    train: Iterable[Interaction],
    items: dict[str, ItemFacts],
    item_profiles: dict[str, str],
    max_items: int = 10,
    seed: int = 0,
    max_field_chars: int = 300,
) -> ChatPrompt:
    """The user profile prompt: a sample of the user's training items with their profiles and reviews."""
    history = sorted(
        (row for row in train_only(train) if row.user_id == user_id), key=lambda row: row.sequence_position
    )
    if not history:
        raise ValueError(f"user {user_id!r} has no training interactions")
    rng = random.Random(f"{seed}:{user_id}")
    chosen = sorted(rng.sample(history, max_items), key=lambda row: row.sequence_position) \
        if len(history) > max_items else history
    lines = ["Please generate a user profile based on their interactions with the following items:"]
    for number, row in enumerate(chosen, start=1):
        facts = items.get(row.item_id, ItemFacts(row.item_id))
        lines.append(f"{number}. {_clip(facts.title or 'Item ' + row.item_id, max_field_chars)}")
        if row.item_id in item_profiles:
            lines.append(f"   Item profile: {_clip(item_profiles[row.item_id], max_field_chars)}")
        if row.review_text and row.review_text.strip():
            lines.append(f"   The user's review: {_clip(row.review_text, max_field_chars)}")
    return ChatPrompt(USER_SYSTEM_PROMPT, "\n".join(lines))
