"""The project's Dagster UI (`make dev`: `dagster dev` on workspace.yaml) in a real browser.

A real `dagster dev` (webserver, daemon, code server) serves this project's definitions over a
temporary Dagster instance, data folder and a one-dataset registry (a tiny movielens slice), so the
UI's partition dialog offers that one partition and ingesting it takes seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from ml.llm.local_server import free_port
from orchestration.assets.ingest import RAW_EVENTS, ingest_raw_logs
from orchestration.checks import INTERACTIONS
from orchestration.definitions import defs
from orchestration.paths import PROJECT_ROOT
from tests.browser.servers import serve
from tests.tiny_datasets import write_registry, write_timestamped_slice

pytestmark = pytest.mark.browser

DATASET = "tiny-timed"
DAGSTER = str(Path(sys.executable).parent / "dagster")
# Loading the definitions (torch, transformers, the dbt manifest) took about 35 s on the 2-core box, both cores busy.
START_TIMEOUT_S = 300.0
# Queue, start a run worker (which loads the definitions again), ingest and check a few thousand rows.
RUN_TIMEOUT_MS = 300_000
SHOULD_SHOW_NUX = "{ shouldShowNux }"
LOCATION_STATUS = """{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _asset_path(key: dg.AssetKey) -> str:
    """The asset's page in the UI: /assets/<path>/<to>/<asset>."""
    return "/assets/" + "/".join(key.path)


def _location_loaded(url: str) -> bool:
    """Whether the webserver answers and has loaded the code location; a location that failed to load fails the test."""
    try:
        response = requests.post(f"{url}/graphql", json={"query": LOCATION_STATUS}, timeout=10)
    except requests.RequestException:
        return False
    if not response.ok:
        return False
    entries = response.json()["data"]["workspaceOrError"].get("locationEntries") or []
    for entry in entries:
        if entry["locationOrLoadError"] and entry["locationOrLoadError"]["__typename"] == "PythonError":
            pytest.fail(f"code location {entry['name']} failed to load: {entry['locationOrLoadError']['message']}",
                        pytrace=False)
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


def _should_show_nux(url: str) -> bool:
    """Whether the instance will greet the next visitor with its first-run dialog."""
    response = requests.post(f"{url}/graphql", json={"query": SHOULD_SHOW_NUX}, timeout=10)
    response.raise_for_status()
    return bool(response.json()["data"]["shouldShowNux"])


def _skip_community_dialog(browser: Browser, url: str) -> None:
    """Answer "Skip" to the "Join the Dagster community" dialog a fresh instance shows its first visitor, once."""
    # It opens whenever its query answers, over whatever dialog a test has open, and then blocks that
    # dialog's buttons: answering it first, as a first user would, keeps every test deterministic.
    if not _should_show_nux(url):
        return
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
        skip = community.get_by_role("button", name="Skip")
        expect(skip).to_be_visible()
        skip.click()
        expect(community).to_be_hidden()
    finally:
        context.close()
    assert not _should_show_nux(url), "Skip did not mark the first-run dialog as seen"


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[str]:
    """`dagster dev` on a free loopback port over a temporary instance and data folder; its base URL."""
    root = tmp_path_factory.mktemp("dagster-ui")
    registry = write_registry(root / "datasets.yaml", {DATASET: write_timestamped_slice(root / "raw", DATASET)})
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    # The project's instance settings (the duckdb pool, run queue), run history in the temporary folder.
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", dagster_home)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "LLMREC_REGISTRY": str(registry),
        "LLMREC_DATA_DIR": str(root / "data"),
        "LLMREC_DUCKDB_PATH": str(root / "data" / "warehouse" / "llmrec.duckdb"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        # As `make dev` exports it: dagster-dbt finds the venv's dbt first.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [DAGSTER, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with serve("dagster-dev", command, cwd=PROJECT_ROOT, env=env, ready=lambda: _location_loaded(url),
               timeout_s=START_TIMEOUT_S):
        _skip_community_dialog(browser, url)
        yield url


def test_asset_graph_shows_every_asset_group(dagster_ui: str, page: Page) -> None:
    graph = defs.resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    page.goto(f"{dagster_ui}/asset-groups")

    # With several groups the global lineage opens collapsed: one node per group, named by its group.
    nodes = page.locator("svg foreignObject.group")
    expect(nodes).to_have_count(len(groups))
    for group in sorted(groups):
        expect(nodes.get_by_text(group, exact=True)).to_be_visible()


def test_materialize_ingest_for_one_partition_from_the_ui(dagster_ui: str, page: Page) -> None:
    page.goto(dagster_ui + _asset_path(RAW_EVENTS))
    page.get_by_role("button", name="Materialize…").click()

    # Ingestion is a multi-asset that cannot be subset: the UI names the siblings that come along.
    siblings = page.get_by_role("dialog").filter(has_text="Additional assets will be materialized")
    for key in ingest_raw_logs.keys - {RAW_EVENTS}:
        expect(siblings).to_contain_text(" / ".join(key.path))
    siblings.get_by_role("button", name="Confirm").click()

    launch = page.get_by_role("dialog").filter(has_text="Partition selection")
    launch.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem", name=DATASET).click()
    launch.get_by_text("Launch runs to materialize").click()  # closes the partition menu
    launch.get_by_role("button", name="Launch 1 run").click()

    expect(page.get_by_text("Launched run")).to_be_visible()
    page.get_by_role("link", name="View", exact=True).click()  # the toast's link to the run
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    run_id = page.url.rsplit("/", 1)[-1]
    expect(page.get_by_text(f"partition: {DATASET}")).to_be_visible()
    # The run's status tag is the one with a run_* icon: wait for the run to end, then require success.
    status = page.locator(".BaseTag").filter(has=page.locator('[role="img"][aria-label^="run_"]'))
    expect(status).to_have_text(re.compile(r"^(Success|Failure|Canceled)$"), timeout=RUN_TIMEOUT_MS)
    expect(status).to_have_text("Success")

    # The asset's event history now holds this run's materialization of the partition.
    page.goto(f"{dagster_ui}{_asset_path(RAW_EVENTS)}?view=events")
    expect(page.get_by_role("link", name=run_id[:8]).first).to_be_visible()


def test_asset_checks_show_on_their_asset(dagster_ui: str, page: Page) -> None:
    # marts/interactions carries a GX suite and a dbt test: both kinds of check must be listed.
    graph = defs.resolve_asset_graph()
    checks = {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys if key.asset_key == INTERACTIONS}
    assert len(checks) >= 2
    page.goto(f"{dagster_ui}{_asset_path(INTERACTIONS)}?view=checks")

    expect(page.get_by_text(f"Checks ({len(checks)})", exact=True)).to_be_visible()
    says_blocking = page.get_by_text("This is a blocking asset check.")
    for name, spec in sorted(checks.items()):
        # Long names are shortened in the middle on screen; the entry keeps the full name in a hidden copy.
        entry = page.get_by_text(name, exact=True).first.locator("..")
        expect(entry).to_be_visible()
        entry.click()
        expect(page).to_have_url(re.compile(rf"[?&]checkDetail={re.escape(name)}(&|$)"))
        if spec.blocking:
            expect(says_blocking).to_be_visible()
        else:
            expect(says_blocking).to_be_hidden()
