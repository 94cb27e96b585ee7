"""RLMRec prompt builders: the right fields in, and never a validation or test interaction."""

import pytest

from ml.profiles.prompts import (
    ITEM_SYSTEM_PROMPT,
    USER_SYSTEM_PROMPT,
    Interaction,
    ItemFacts,
    LeakError,
    build_item_prompt,
    build_user_prompt,
    has_item_evidence,
    has_user_evidence,
)

ROWS = [
    Interaction("u1", "i1", "train", 1, "great lipstick, lasts all day"),
    Interaction("u1", "i2", "train", 2, None),
    Interaction("u1", "i3", "valid", 3, "VALIDATION SECRET"),
    Interaction("u1", "i1", "test", 4, "TEST SECRET"),
    Interaction("u2", "i1", "train", 1, "too dry for me"),
]
ITEMS = {
    "i1": ItemFacts("i1", title="Red Lipstick", brand="Acme", categories=("Makeup", "Lips"), attributes={"Year": "2014"}),
    "i2": ItemFacts("i2", title="Blue Mascara", description="Waterproof mascara."),
}


def _train(rows: list[Interaction]) -> list[Interaction]:
    return [row for row in rows if row.split == "train"]


def test_item_prompt_has_every_field_and_training_reviews_only() -> None:
    prompt = build_item_prompt(ITEMS["i1"], _train(ROWS))
    assert prompt.system == ITEM_SYSTEM_PROMPT and '"summarization"' in prompt.system
    for expected in ("Title: Red Lipstick", "Brand: Acme", "Categories: Makeup, Lips", "Year: 2014",
                     "great lipstick, lasts all day", "too dry for me"):
        assert expected in prompt.user
    assert "SECRET" not in prompt.user


def test_prompts_refuse_validation_and_test_rows() -> None:
    with pytest.raises(LeakError, match="test interaction"):
        build_item_prompt(ITEMS["i1"], ROWS)
    with pytest.raises(LeakError):
        build_user_prompt("u1", ROWS, ITEMS, {})


def test_user_prompt_lists_training_items_with_profiles_and_reviews() -> None:
    prompt = build_user_prompt("u1", _train(ROWS), ITEMS, {"i1": "For lovers of bold, long-lasting colour."})
    assert prompt.system == USER_SYSTEM_PROMPT
    lines = prompt.user.splitlines()
    assert lines[1] == "1. Red Lipstick" and "Item profile: For lovers of bold" in lines[2]
    assert "The user's review: great lipstick" in lines[3] and lines[4] == "2. Blue Mascara"
    assert "SECRET" not in prompt.user and "too dry" not in prompt.user  # u2's review stays out


def test_samples_are_reproducible_and_bounded() -> None:
    many = [Interaction("u1", f"i{n}", "train", n, f"review {n}") for n in range(40)]
    first = build_user_prompt("u1", many, {}, {}, max_items=5, seed=3)
    assert first == build_user_prompt("u1", many, {}, {}, max_items=5, seed=3)
    assert first.user.count("The user's review") == 5
    assert first.prompt_hash != build_user_prompt("u1", many, {}, {}, max_items=5, seed=4).prompt_hash
    item = build_item_prompt(ItemFacts("i1", title="X"), [Interaction(f"u{n}", "i1", "train", 1, f"r{n}") for n in range(9)],
                             max_reviews=3)
    assert item.user.count("\n- ") == 3


def test_a_user_without_training_items_is_an_error() -> None:
    with pytest.raises(ValueError, match="no training"):
        build_user_prompt("nobody", _train(ROWS), ITEMS, {})


def test_bare_ids_are_no_evidence_for_a_profile() -> None:
    bare = ItemFacts("i1")
    train = [Interaction("u1", "i1", "train", 1)]
    assert not has_item_evidence(bare, train)
    assert has_item_evidence(ItemFacts("i1", title="Toy Story"), train)
    assert has_item_evidence(ItemFacts("i1", attributes={"year": "1995"}), train)
    assert has_item_evidence(bare, [Interaction("u1", "i1", "train", 1, review_text="great fun")])
    assert not has_item_evidence(bare, [Interaction("u1", "i1", "train", 1, review_text="  ")])
    # A user is profiled when one of their items has a title, a profile, or when they wrote a review.
    assert not has_user_evidence(train, {"i1": bare}, {})
    assert has_user_evidence(train, {"i1": bare}, {"i1": "a profile"})
    assert has_user_evidence(train, {"i1": ItemFacts("i1", title="Toy Story")}, {})
    assert has_user_evidence([Interaction("u1", "i1", "train", 1, review_text="fun")], {}, {})
