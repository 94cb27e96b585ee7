"""The service as users run it: `python -m serving` in its own process, on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ml.llm.local_server import free_port

START_SECONDS = 90.0  # importing torch and faiss on a busy CI core


@dataclass
class Service:
    """A running `python -m serving` and how to reach and read it."""

    process: subprocess.Popen[str]
    url: str
    log: Path

    def get(self, path: str, **params: object) -> httpx.Response:
        """One GET against the service."""
        return httpx.get(f"{self.url}{path}", params=params, timeout=10)

    def served_version(self) -> str | None:
        """The version `/readyz` says the shop is served from."""
        return self.get("/readyz").json()["datasets"][0]["version"]


def start_service(data_dir: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `python -m serving *args` over `data_dir`, logging to `tmp_path/service.log`; does not wait."""
    log = (tmp_path / "service.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "serving", *args], stdout=log, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "LLMREC_DATA_DIR": str(data_dir), "LLMREC_SERVING_POLL_SECONDS": "0.2", **(env or {})})


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll `condition` until it holds; returns the seconds it took, fails the test after `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if condition():
                return time.monotonic() - started
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {seconds} s")


@contextmanager
def running_service(data_dir: Path, tmp_path: Path) -> Iterator[Service]:
    """`python -m serving` over `data_dir` on a free port, ready; stopped (SIGTERM) at the end if still running."""
    port = free_port()
    process = start_service(data_dir, tmp_path, "--port", str(port))
    running = Service(process, f"http://127.0.0.1:{port}", tmp_path / "service.log")
    try:
        wait_for(lambda: running.get("/readyz").status_code == 200, START_SECONDS, "readiness")
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
