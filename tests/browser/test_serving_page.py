"""The service's page in a real browser: type a user, see their history and recommendations, click for similar items."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.serving.running import Service, running_service
from tests.serving.shop import DATASET, PublishedShop, publish_shop

pytestmark = pytest.mark.browser


@pytest.fixture
def shop_service(tmp_path: Path) -> Iterator[tuple[PublishedShop, Service]]:
    """A published shop and `python -m serving` over it."""
    shop = publish_shop(tmp_path)
    with running_service(shop.data_dir, tmp_path) as service:
        yield shop, service


def test_typing_a_user_shows_their_history_and_recommendations(
    page: Page, shop_service: tuple[PublishedShop, Service],
) -> None:
    shop, service = shop_service
    user = shop.user_ids[9]
    page.goto(service.url)
    expect(page.locator("#index-version")).to_have_text(shop.published.version)
    page.fill("input[name=user_id]", user)
    page.click("#show")

    history = page.locator("#history li.item")
    expected_history = list(reversed(shop.history_ids(9)))  # newest first
    expect(history).to_have_count(len(expected_history))
    assert [row.get_attribute("data-item") for row in history.all()] == expected_history
    expect(history.first.locator(".title")).to_have_text(f"Title of {expected_history[0]}")

    top = service.get("/v1/recommendations", dataset=DATASET, user_id=user, k=10).json()["items"]
    recommended = page.locator("#recommendations li.item")
    expect(recommended).to_have_count(10)
    assert [row.get_attribute("data-item") for row in recommended.all()] == [item["item_id"] for item in top]
    expect(recommended.first.locator(".score")).to_have_text(f"{top[0]['score']:.4f}")

    # A click on a recommendation lists its similar items, as the API gives them.
    recommended.first.click()
    similar = service.get(f"/v1/items/{top[0]['item_id']}/similar", dataset=DATASET, k=5).json()["items"]
    listed = recommended.first.locator(".similar li")
    expect(listed).to_have_count(5)
    expect(listed.first).to_contain_text(similar[0]["item_id"])


def test_a_random_user_and_an_unknown_user(page: Page, shop_service: tuple[PublishedShop, Service]) -> None:
    shop, service = shop_service
    page.goto(service.url)
    page.click("#random-user")
    expect(page.locator("#recommendations li.item")).to_have_count(10)
    assert page.input_value("input[name=user_id]") in shop.user_ids
    page.fill("input[name=user_id]", "nobody")
    page.click("#show")
    expect(page.locator("#error")).to_contain_text("unknown user 'nobody'")
