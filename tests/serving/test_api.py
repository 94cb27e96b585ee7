"""The JSON API over a real published index: every endpoint, every error, the guards and the page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from ml.evaluate.ranking import ranks_from_scores
from ml.index.publish import publish_index
from serving.app import create_app
from serving.registry import IndexRegistry
from serving.schemas import MAX_HISTORY
from serving.settings import ServingSettings, is_loopback
from tests.serving.shop import DATASET, PublishedShop


@pytest.fixture
def client(shop: PublishedShop) -> Iterator[TestClient]:
    """The app over the shop's data folder, started (its registry loads the index) and stopped."""
    with TestClient(create_app(shop.settings())) as client:
        yield client


def test_datasets_lists_the_served_version_with_figures_and_lineage(shop: PublishedShop) -> None:
    settings = shop.settings(mlflow_url="http://127.0.0.1:5000/", dagster_url="http://127.0.0.1:3000")
    with TestClient(create_app(settings)) as client:
        body = client.get("/v1/datasets").json()
    [info] = body["datasets"]
    assert (info["dataset"], info["version"], info["model"]) == (DATASET, shop.published.version, "sasrec")
    assert info["published_at"] == shop.published.manifest["created_at"]
    assert (info["item_count"], info["user_count"], info["index_kind"]) == (80, 120, "flat_ip")
    assert info["validation"] == {"ndcg@10": 0.05} and info["test"] == {"recall@10": 0.09}
    assert info["lineage"] == {
        "checkpoint_version": shop.checkpoint.version, "mlflow_run_id": "run-1", "registered_model": None,
        "registered_version": None, "dagster_run_id": "dagster-1",
        "mlflow_run_url": "http://127.0.0.1:5000/#/runs/run-1", "dagster_run_url": "http://127.0.0.1:3000/runs/dagster-1"}
    assert info["history_encoder"] == "model" and info["problem"] is None


def test_a_users_top_k_leaves_out_their_history_and_names_the_version(client: TestClient, shop: PublishedShop) -> None:
    user = shop.user_ids[7]
    body = client.get("/v1/recommendations", params={"dataset": DATASET, "user_id": user, "k": 15}).json()
    seen = set(shop.history_ids(7))
    assert (body["version"], body["model"], body["user_id"], body["query"]) == (
        shop.published.version, "sasrec", user, "user_vector")
    assert len(body["items"]) == 15 and not {item["item_id"] for item in body["items"]} & seen
    assert body["excluded"] == len(seen)
    assert all(item["title"] == f"Title of {item['item_id']}" for item in body["items"])
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # With exclude_seen off, the same query ranks the history too: the filtered list is its unseen part.
    everything = client.get("/v1/recommendations", params={"dataset": DATASET, "user_id": user, "k": 80,
                                                           "exclude_seen": "false"}).json()["items"]
    assert len(everything) == 80
    unseen = [item["item_id"] for item in everything if item["item_id"] not in seen]
    assert [item["item_id"] for item in body["items"]] == unseen[:15]


def test_a_posted_history_is_encoded_by_the_published_models_user_tower(client: TestClient, shop: PublishedShop) -> None:
    history = shop.history_ids(3)
    body = client.post("/v1/recommendations", json={"dataset": DATASET, "history": [*history, "no-such-item"],
                                                     "k": 5, "exclude": [shop.item_ids[0], "also-unknown"]}).json()
    assert body["query"] == "model_history_encoder" and body["fallback"] is None
    assert body["unknown_items"] == ["no-such-item"]
    # Exactly the model's own scoring of that history, history and the excluded item left out.
    scores = shop.checkpoint.model.score([shop.histories[3]])[0, 1:].detach().numpy()
    left_out = [*shop.histories[3] - 1, 0]
    scores[left_out] = -np.inf
    expected = [shop.item_ids[row] for row in np.argsort(-scores, kind="stable")[:5]]
    assert [item["item_id"] for item in body["items"]] == expected
    assert body["excluded"] == len(set(history) | {shop.item_ids[0]})


def test_an_empty_or_unknown_history_falls_back_to_popularity_and_says_so(client: TestClient, shop: PublishedShop) -> None:
    counts = np.zeros(len(shop.item_ids), dtype=int)
    for history in shop.histories:
        counts[history - 1] += 1
    for history in ([], ["unknown-1", "unknown-2"]):
        body = client.post("/v1/recommendations", json={"dataset": DATASET, "history": history, "k": 4,
                                                         "exclude": [shop.item_ids[int(np.argmax(counts))]]}).json()
        assert (body["query"], body["fallback"], body["unknown_items"]) == ("popularity", "popularity", history)
        order = np.lexsort((np.arange(len(counts)), -counts))[1:5]  # the most popular item was excluded
        assert [item["item_id"] for item in body["items"]] == [shop.item_ids[row] for row in order]
        assert [item["score"] for item in body["items"]] == [float(counts[row]) for row in order]


def test_similar_items_are_the_nearest_by_cosine_without_the_item_itself(client: TestClient, shop: PublishedShop) -> None:
    item = shop.item_ids[11]
    body = client.get(f"/v1/items/{item}/similar", params={"dataset": DATASET, "k": 6}).json()
    assert (body["item_id"], body["title"], body["version"]) == (item, f"Title of {item}", shop.published.version)
    vectors = shop.checkpoint.model.catalogue_matrix().detach().numpy()  # the learned table, without the offset column
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit[11]
    cosine[11] = -np.inf
    assert [entry["item_id"] for entry in body["items"]] == [shop.item_ids[row] for row in np.argsort(-cosine)[:6]]
    assert body["items"][0]["score"] == pytest.approx(float(cosine.max()), abs=1e-5)


@pytest.mark.parametrize(("method", "path", "params", "json", "fragment"), [
    ("get", "/v1/recommendations", {"dataset": "nope", "user_id": "user-001"}, None, "no published index for dataset 'nope'"),
    ("get", "/v1/recommendations", {"dataset": DATASET, "user_id": "nobody"}, None, "unknown user 'nobody'"),
    ("post", "/v1/recommendations", None, {"dataset": "nope", "history": []}, "no published index"),
    ("get", "/v1/items/nothing/similar", {"dataset": DATASET}, None, "unknown item 'nothing'"),
    ("get", "/v1/items/item-001/similar", {"dataset": "../indexes"}, None, "no published index for dataset '../indexes'"),
])
def test_unknown_datasets_users_and_items_are_404_with_a_message(
    client: TestClient, method: str, path: str, params: dict | None, json: dict | None, fragment: str,
) -> None:
    response = client.request(method.upper(), path, params=params, json=json)
    assert response.status_code == 404 and fragment in response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "params", "json"), [
    ("get", "/v1/recommendations", {"dataset": DATASET, "user_id": "user-001", "k": 0}, None),
    ("get", "/v1/recommendations", {"dataset": DATASET, "user_id": "user-001", "k": 1001}, None),
    ("get", "/v1/recommendations", {"dataset": DATASET, "user_id": "user-001", "k": "ten"}, None),
    ("get", "/v1/recommendations", {"dataset": DATASET}, None),
    ("get", "/v1/recommendations", {"dataset": DATASET, "user_id": "u" * 201}, None),
    ("post", "/v1/recommendations", None, {"dataset": DATASET, "history": ["item-001"] * (MAX_HISTORY + 1)}),
    ("post", "/v1/recommendations", None, {"dataset": DATASET, "history": [], "k": 1001}),
    ("post", "/v1/recommendations", None, {"dataset": DATASET, "history": [], "surprise": 1}),
    ("post", "/v1/recommendations", None, {"history": []}),
    ("get", "/v1/items/item-001/similar", {"dataset": DATASET, "k": -1}, None),
])
def test_bad_parameters_are_422_with_the_field_named(
    client: TestClient, method: str, path: str, params: dict | None, json: dict | None,
) -> None:
    response = client.request(method.upper(), path, params=params, json=json)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] in {"k", "user_id", "history", "surprise", "dataset"}


def test_malformed_and_oversized_bodies_are_refused(client: TestClient) -> None:
    response = client.post("/v1/recommendations", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    response = client.post("/v1/recommendations", content=b"[" + b'"x",' * 40_000 + b'"x"]',
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "over 65536 bytes" in response.json()["detail"]


def test_probes_and_the_openapi_schema(client: TestClient, shop: PublishedShop) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"ready": True, "datasets": [
        {"dataset": DATASET, "version": shop.published.version, "refused_version": None, "problem": None}]}
    schema = client.get("/openapi.json").json()
    assert {"/v1/datasets", "/v1/recommendations", "/v1/items/{item_id}/similar", "/healthz", "/readyz"} <= set(
        schema["paths"])
    assert client.get("/docs").status_code == 200


def test_a_version_without_user_vectors_answers_histories_but_not_user_ids(shop: PublishedShop, tmp_path: Path) -> None:
    data_dir = tmp_path / "other"
    shutil.copytree(shop.data_dir / "checkpoints", data_dir / "checkpoints")
    publish_index(data_dir / "indexes", DATASET, shop.item_ids, np.eye(80, 16, dtype=np.float32), None, None,
                  {"model": "sasrec"}, verify_users=10)
    with TestClient(create_app(ServingSettings(data_dir=data_dir))) as client:
        response = client.get("/v1/recommendations", params={"dataset": DATASET, "user_id": "user-001"})
        assert response.status_code == 409 and "has no user vectors" in response.json()["detail"]
        # No checkpoint named: histories fall back to the mean of their items' vectors, and the answer says so.
        body = client.post("/v1/recommendations", json={"dataset": DATASET, "history": ["item-002"], "k": 3}).json()
        assert body["query"] == "mean_item_vectors" and "item-002" not in [item["item_id"] for item in body["items"]]
        # No histories were published: no popularity to fall back on.
        response = client.post("/v1/recommendations", json={"dataset": DATASET, "history": []})
        assert response.status_code == 409 and "no popularity" in response.json()["detail"]
        info = client.get("/v1/datasets").json()["datasets"][0]
        assert info["history_encoder"].startswith("mean_item_vectors (the manifest names no model checkpoint")


def test_a_token_guards_every_request_and_is_required_off_loopback(shop: PublishedShop) -> None:
    with TestClient(create_app(shop.settings(token="s3cret"))) as client:
        assert client.get("/healthz").status_code == 401
        assert client.get("/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 401
        response = client.get("/v1/datasets", headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 200 and response.json()["datasets"][0]["dataset"] == DATASET
    assert [is_loopback(host) for host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.5", "example.org")] == [
        True, True, True, False, False, False]
    with pytest.raises(ValueError, match="needs a bearer token in \\$LLMREC_SERVING_TOKEN"):
        ServingSettings(host="0.0.0.0").require_token_off_loopback()
    ServingSettings(host="0.0.0.0", token="s3cret").require_token_off_loopback()


def test_parity_with_the_offline_evaluator_under_the_served_protocol(client: TestClient, shop: PublishedShop) -> None:
    """For 100 users the API's top 10 is the evaluator's top 10 with the history removed, in order."""
    torch.set_num_threads(1)
    users = range(100)
    scores = shop.checkpoint.model.score([shop.histories[user] for user in users])
    for user in users:
        body = client.get("/v1/recommendations",
                          params={"dataset": DATASET, "user_id": shop.user_ids[user], "k": 10}).json()
        served = [shop.item_ids.index(item["item_id"]) + 1 for item in body["items"]]
        assert len(served) == 10 and not set(served) & set(shop.histories[user].tolist())
        # The evaluator's own rank (ties against the model, history removed) of each served item is its position.
        ranks = ranks_from_scores(scores[[user] * 10], served, [shop.histories[user]] * 10)
        assert ranks.tolist() == list(range(1, 11)), f"user {user}: evaluator ranks {ranks.tolist()}"


def test_the_page_shows_a_users_history_newest_first_beside_their_recommendations(
    client: TestClient, shop: PublishedShop,
) -> None:
    page = client.get("/", params={"dataset": DATASET, "user_id": shop.user_ids[5], "k": 5})
    assert page.status_code == 200
    history = shop.history_ids(5)
    positions = [page.text.index(f'data-item="{item}"') for item in reversed(history)]
    assert positions == sorted(positions), "the history is listed newest first"
    top = client.get("/v1/recommendations", params={"dataset": DATASET, "user_id": shop.user_ids[5], "k": 5}).json()
    for item in top["items"]:
        assert f"Title of {item['item_id']}" in page.text and f"{item['score']:.4f}" in page.text
    assert shop.published.version in page.text and "sasrec" in page.text
    missing = client.get("/", params={"dataset": DATASET, "user_id": "nobody"})
    assert missing.status_code == 404 and "unknown user &#39;nobody&#39;" in missing.text
    picked = client.get("/", params={"dataset": DATASET, "pick": "random"}, follow_redirects=False)
    assert picked.status_code == 303 and "user_id=user-" in picked.headers["location"]


def test_the_page_says_when_nothing_is_published(tmp_path: Path) -> None:
    with TestClient(create_app(ServingSettings(data_dir=tmp_path))) as client:
        page = client.get("/")
        assert page.status_code == 503 and "No published index yet" in page.text
        assert client.get("/readyz").status_code == 503


def test_a_swap_leaves_a_request_in_flight_on_the_version_it_started_with(shop: PublishedShop) -> None:
    registry = IndexRegistry(shop.indexes_root, shop.data_dir / "checkpoints")
    registry.refresh()
    in_flight = registry.get(DATASET)
    before = in_flight.for_user("user-001", 5).items
    second = shop.publish_again(seed=1).version
    registry.refresh()
    assert registry.get(DATASET).version == second
    assert in_flight.version == shop.published.version and in_flight.for_user("user-001", 5).items == before
    assert registry.get(DATASET).for_user("user-001", 5).items != before
