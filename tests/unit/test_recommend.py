"""Recommendations from the published index: by user id, by item history, exclusions, titles, bad requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.data.versioned import NoCurrentVersion
from ml.index.build import IndexConfig
from ml.index.publish import publish_index
from ml.index.recommend import LoadedIndex, load_current, mean_history_vector, recommend

ITEMS, USERS, DIM = 300, 40, 16


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    """Random unit item and user vectors (continuous, so exact top-k has no ties)."""
    return {"items": _unit(ITEMS, 0), "users": _unit(USERS, 1)}


@pytest.fixture
def loaded(tmp_path: Path, data: dict[str, np.ndarray]) -> LoadedIndex:
    """The flat index over `data`, published and loaded back."""
    publish_index(tmp_path, "ds", [f"i{n}" for n in range(ITEMS)], data["items"], [f"u{n}" for n in range(USERS)],
                  data["users"], {"model": "test"}, IndexConfig(), verify_users=20)
    return load_current(tmp_path, "ds")


def _brute_force(query: np.ndarray, items: np.ndarray, k: int, exclude: set[int] | None = None) -> list[str]:
    scores = items @ query
    scores[list(exclude or ())] = -np.inf
    return [f"i{row}" for row in np.argsort(-scores)[:k]]


def test_recommend_by_user_matches_brute_force(loaded: LoadedIndex, data: dict[str, np.ndarray]) -> None:
    for user in (0, 7, 39):
        picks = recommend(loaded, user_id=f"u{user}", k=10)
        assert [pick.item_id for pick in picks] == _brute_force(data["users"][user], data["items"], 10)
        expected_scores = data["items"][[int(pick.item_id[1:]) for pick in picks]] @ data["users"][user]
        np.testing.assert_allclose([pick.score for pick in picks], expected_scores, rtol=1e-5, atol=1e-6)
        assert all(pick.title is None for pick in picks)


def test_recommend_by_history_uses_the_normalized_mean_and_excludes_history(
    loaded: LoadedIndex, data: dict[str, np.ndarray],
) -> None:
    history = ["i3", "i10", "i250"]
    query = data["items"][[3, 10, 250]].mean(axis=0)
    query /= np.linalg.norm(query)
    np.testing.assert_allclose(mean_history_vector(loaded, history), query, rtol=1e-6)
    titles = {f"i{n}": f"Title {n}" for n in range(ITEMS)}
    picks = recommend(loaded, history=history, k=10, titles=titles)
    assert len(picks) == 10 and not {pick.item_id for pick in picks} & set(history)
    assert [pick.item_id for pick in picks] == _brute_force(query, data["items"], 10, exclude={3, 10, 250})
    assert [pick.title for pick in picks] == [titles[pick.item_id] for pick in picks]
    kept = recommend(loaded, history=history, k=10, exclude_history=False)
    assert [pick.item_id for pick in kept] == _brute_force(query, data["items"], 10)


def test_user_with_history_queries_by_user_and_excludes_the_history(
    loaded: LoadedIndex, data: dict[str, np.ndarray],
) -> None:
    top = [pick.item_id for pick in recommend(loaded, user_id="u5", k=5)]
    picks = recommend(loaded, user_id="u5", history=top[:3], k=5)
    exclude = {int(item[1:]) for item in top[:3]}
    assert [pick.item_id for pick in picks] == _brute_force(data["users"][5], data["items"], 5, exclude)


def test_a_model_specific_history_encoder_replaces_the_mean(loaded: LoadedIndex, data: dict[str, np.ndarray]) -> None:
    seen: list[list[str]] = []

    def last_item(history: list[str]) -> np.ndarray:
        seen.append(history)
        return data["items"][int(history[-1][1:])]

    picks = recommend(loaded, history=["i1", "i2"], k=4, history_encoder=last_item)
    assert seen == [["i1", "i2"]]
    assert [pick.item_id for pick in picks] == _brute_force(data["items"][2], data["items"], 4, exclude={1, 2})
    with pytest.raises(ValueError, match="finite vector of dim 16"):
        recommend(loaded, history=["i1"], history_encoder=lambda history: np.zeros(3))


def test_k_larger_than_what_is_left_returns_everything_else(loaded: LoadedIndex) -> None:
    picks = recommend(loaded, history=["i0", "i1"], k=ITEMS)
    assert len(picks) == ITEMS - 2 and len({pick.item_id for pick in picks}) == ITEMS - 2


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"user_id": "nobody"}, "unknown user 'nobody'"),
        ({"history": ["i1", "ghost"]}, r"1 history item\(s\) not in index .*ghost"),
        ({}, "user_id or a non-empty item history"),
        ({"history": []}, "user_id or a non-empty item history"),
        ({"user_id": "u1", "k": 0}, "k must be positive"),
    ],
)
def test_bad_requests_are_clear_value_errors(loaded: LoadedIndex, request_args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recommend(loaded, **request_args)


def test_by_user_needs_published_user_vectors(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    publish_index(tmp_path, "ds", [f"i{n}" for n in range(ITEMS)], data["items"], None, None, {}, IndexConfig(),
                  verify_users=20)
    loaded = load_current(tmp_path, "ds")
    with pytest.raises(ValueError, match="no user vectors"):
        recommend(loaded, user_id="u1")
    assert len(recommend(loaded, history=["i1"], k=3)) == 3


def test_loading_before_anything_is_published_says_so(tmp_path: Path) -> None:
    with pytest.raises(NoCurrentVersion, match="nothing published"):
        load_current(tmp_path, "ds")


def test_recommend_from_an_approximate_index_returns_k_items(tmp_path: Path) -> None:
    items = _unit(2000, 3)
    publish_index(tmp_path, "ds", [f"i{n}" for n in range(2000)], items, None, None, {}, IndexConfig(kind="hnsw"),
                  verify_users=50)
    loaded = load_current(tmp_path, "ds")
    picks = recommend(loaded, history=["i5", "i6"], k=10)
    assert len(picks) == 10 and not {"i5", "i6"} & {pick.item_id for pick in picks}


def test_titles_published_with_the_index_come_back_with_the_recommendations(
    tmp_path: Path, data: dict[str, np.ndarray],
) -> None:
    titles = [f"Title {n}" if n % 3 else None for n in range(ITEMS)]  # some items have no title
    publish_index(tmp_path, "ds", [f"i{n}" for n in range(ITEMS)], data["items"], None, None, {"model": "test"},
                  IndexConfig(), verify_users=20, item_titles=titles)
    picks = recommend(load_current(tmp_path, "ds"), history=["i1"], k=20)
    assert [pick.title for pick in picks] == [titles[int(pick.item_id[1:])] for pick in picks]
    assert any(pick.title is None for pick in picks) and any(pick.title for pick in picks)
    with pytest.raises(ValueError, match="titles for"):
        publish_index(tmp_path, "ds", [f"i{n}" for n in range(ITEMS)], data["items"], None, None, {}, IndexConfig(),
                      verify_users=20, item_titles=titles[:-1])
