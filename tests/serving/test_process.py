"""The service as users run it: a real uvicorn process on a free loopback port, over a real index folder."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from ml.index.store import ITEM_VECTORS_FILE, index_folder, rollback
from ml.llm.local_server import free_port
from tests.processes import warehouse_locked_by_another_process
from tests.serving.running import START_SECONDS, Service, running_service, start_service, wait_for
from tests.serving.shop import DATASET, PublishedShop

SWAP_SECONDS = 5.0  # the bound: a publish or rollback is served within 5 s


@pytest.fixture
def service(shop: PublishedShop, tmp_path: Path) -> Iterator[Service]:
    """The service over the shop's data folder, ready; stopped at the end if the test did not stop it."""
    with running_service(shop.data_dir, tmp_path) as running:
        yield running


def test_it_serves_swaps_on_publish_and_rollback_and_refuses_a_corrupt_version(
    service: Service, shop: PublishedShop, tmp_path: Path,
) -> None:
    first = shop.published.version
    user = shop.user_ids[0]
    answer = service.get("/v1/recommendations", dataset=DATASET, user_id=user, k=5).json()
    assert answer["version"] == first and len(answer["items"]) == 5

    second = shop.publish_again(seed=1).version
    waited = wait_for(lambda: service.served_version() == second, SWAP_SECONDS, "the swap to a new publish")
    assert service.get("/v1/recommendations", dataset=DATASET, user_id=user, k=5).json()["version"] == second
    assert waited < SWAP_SECONDS

    assert rollback(shop.indexes_root, DATASET) == first
    wait_for(lambda: service.served_version() == first, SWAP_SECONDS, "the swap back on rollback")

    # A version whose files do not match their manifest (a bad copy, a disk fault) is refused; the old one serves.
    staging = tmp_path / "staging"
    shutil.copytree(shop.indexes_root / DATASET / second, staging)
    np.save(staging / ITEM_VECTORS_FILE, np.zeros((80, 17), np.float32))
    corrupt = second.replace("Z-", "Z-bad")
    shutil.move(staging, shop.indexes_root / DATASET / corrupt)
    index_folder(shop.indexes_root, DATASET).point_to(corrupt)

    def refused() -> bool:
        state = service.get("/readyz").json()["datasets"][0]
        return state["refused_version"] == corrupt

    wait_for(refused, SWAP_SECONDS, "the refusal of the corrupt version")
    readiness = service.get("/readyz")
    state = readiness.json()["datasets"][0]
    assert readiness.status_code == 200 and state["version"] == first
    assert f"{ITEM_VECTORS_FILE} is corrupted" in state["problem"]
    assert service.get("/v1/recommendations", dataset=DATASET, user_id=user, k=5).json()["version"] == first
    assert f"refused {DATASET} index {corrupt}" in service.log.read_text()


def test_it_answers_while_another_process_holds_the_warehouse_lock(
    service: Service, tmp_path: Path,
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with warehouse_locked_by_another_process(str(warehouse)):
        response = service.get("/v1/recommendations", dataset=DATASET, user_id="user-003", k=3)
        assert response.status_code == 200 and len(response.json()["items"]) == 3


# uvicorn finishes its graceful shutdown, then re-raises the signal it caught, so a process manager sees it.
STOPPED_BY_SIGTERM = (0, -signal.SIGTERM)


def test_it_shuts_down_cleanly_on_sigterm(service: Service) -> None:
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=15) in STOPPED_BY_SIGTERM
    log = service.log.read_text()
    assert "Application shutdown complete" in log and "Finished server process" in log and "Traceback" not in log


def test_off_loopback_it_needs_a_token_and_then_every_request_carries_it(
    shop: PublishedShop, tmp_path: Path,
) -> None:
    port = free_port()
    refused = start_service(shop.data_dir, tmp_path, "--host", "0.0.0.0", "--port", str(port),
                     env={"LLMREC_SERVING_TOKEN": ""})
    assert refused.wait(timeout=60) == 2
    assert "needs a bearer token in $LLMREC_SERVING_TOKEN" in (tmp_path / "service.log").read_text()

    guarded = start_service(shop.data_dir, tmp_path, "--host", "0.0.0.0", "--port", str(port),
                     env={"LLMREC_SERVING_TOKEN": "s3cret"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/healthz", timeout=5).status_code == 401, START_SECONDS, "the guarded start")
        answer = httpx.get(f"{url}/readyz", headers={"Authorization": "Bearer s3cret"}, timeout=5)
        assert answer.status_code == 200 and answer.json()["ready"]
    finally:
        guarded.send_signal(signal.SIGTERM)
        assert guarded.wait(timeout=15) in STOPPED_BY_SIGTERM
