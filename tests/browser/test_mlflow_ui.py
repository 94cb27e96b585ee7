"""The MLflow UI over the project's tracking store, in a real browser: the registry shows who is champion.

The store is written by the project's own code path (ml/tracking: a tracked run, its logged model,
two registered versions, the champion alias moved by `promote_champion`), then a real `mlflow server`
serves it on a free loopback port. The champion is the older version, as after a newer one that
failed its gate: the UI must show the alias where it points, not on the latest version.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from playwright.sync_api import Page, expect

from ml.llm.local_server import free_port
from ml.tracking.mlflow_store import (
    CHAMPION_ALIAS,
    TrackingStore,
    finish_run,
    log_model,
    promote_champion,
    register_best_model,
    start_training_run,
)
from orchestration.assets.evaluation import registered_model_name
from orchestration.assets.shared import TRAINING_EXPERIMENT
from tests.browser.servers import answers, serve

pytestmark = pytest.mark.browser

DATASET = "tiny-timed"
MLFLOW = str(Path(sys.executable).parent / "mlflow")
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Registry:
    """A tracking store, its registered model's name, its champion version and its latest version."""

    store: TrackingStore
    model_name: str
    champion: str
    latest: str


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A tracking store with one tracked run, two registered versions of its model, the first one champion."""
    store = TrackingStore(tmp_path_factory.mktemp("mlflow-ui") / "mlflow")
    run_id = start_training_run(store, TRAINING_EXPERIMENT, f"{DATASET}/popularity",
                                tags={"dataset": DATASET, "model": "popularity"}, params={"lr": 0.001})
    torch.manual_seed(0)
    model_uri = log_model(store, run_id, torch.nn.Linear(4, 2))
    finish_run(store, run_id)
    name = registered_model_name(DATASET)
    champion = register_best_model(store, name, model_uri, run_id, {"valid_ndcg@10": 0.3}, {"model": "popularity"})
    latest = register_best_model(store, name, model_uri, run_id, {"valid_ndcg@10": 0.2}, {"model": "popularity"})
    promote_champion(store, name, champion)
    return Registry(store, name, champion, latest)


@pytest.fixture(scope="module")
def mlflow_ui(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` over the store on a free loopback port; its base URL."""
    store = registry.store
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [MLFLOW, "server", "--backend-store-uri", store.tracking_uri, "--registry-store-uri", store.tracking_uri,
               "--default-artifact-root", store.artifact_root.resolve().as_uri(),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # The job runner (GenAI evaluation jobs, eight worker processes) has nothing to do for a registry page.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # Its own working directory: nothing MLflow writes by default may land in the project.
    cwd = tmp_path_factory.mktemp("mlflow-cwd")
    with serve("mlflow-server", command, cwd=cwd, env=env, ready=lambda: answers(f"{url}/health"),
               timeout_s=START_TIMEOUT_S):
        yield url


@pytest.fixture
def mlflow_page(page: Page) -> Page:
    """A page on which MLflow's "new Model Registry UI" announcement is closed whenever it opens."""
    # It opens on a fresh browser profile's first registry visit, once its settings have loaded: a handler
    # answers it whenever it shows, before the next action or assertion.
    announcement = page.get_by_role("dialog").filter(has_text="new Model Registry UI")
    page.add_locator_handler(announcement, lambda dialog: dialog.get_by_role("button", name="Close").click())
    return page


def test_registry_shows_the_model_and_its_champion(mlflow_ui: str, registry: Registry, mlflow_page: Page) -> None:
    held, page = registry, mlflow_page
    # The UI polls its API: wait for the page's load event and then for elements, never for network idle.
    page.goto(f"{mlflow_ui}/#/models", wait_until="load")

    model = page.get_by_role("link", name=held.model_name, exact=True)
    row = page.get_by_role("row").filter(has=model)
    expect(row.get_by_role("link", name=f"Version {held.latest}", exact=True)).to_be_visible()
    alias = row.get_by_title(CHAMPION_ALIAS, exact=True)
    expect(alias).to_contain_text(CHAMPION_ALIAS)
    expect(alias.locator("xpath=ancestor::a[1]")).to_contain_text(f"Version {held.champion}")

    model.click()
    expect(page).to_have_url(re.compile(rf"#/models/{re.escape(held.model_name)}$"))
    for version in (held.champion, held.latest):
        version_row = page.get_by_role("row").filter(
            has=page.get_by_role("link", name=f"Version {version}", exact=True))
        expect(version_row).to_be_visible()
        aliases = version_row.get_by_title(CHAMPION_ALIAS, exact=True)
        expect(aliases).to_have_count(1 if version == held.champion else 0)
