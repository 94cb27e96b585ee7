"""Real UI servers for the browser tests: a free loopback port, start, wait until it answers, stop cleanly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import requests

from orchestration.paths import PROJECT_ROOT

logger = logging.getLogger(__name__)

# Server logs stay after the run (CI keeps test-artifacts/), beside the screenshots.
LOGS = PROJECT_ROOT / "test-artifacts" / "logs"
STOP_TIMEOUT_S = 30.0


def answers(url: str) -> bool:
    """Whether `url` answers a GET with a 2xx status."""
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


def _interrupts_by_default() -> None:
    # A pytest started in the background by a non-interactive shell inherits SIGINT ignored, and
    # `dagster dev` maps SIGTERM onto its SIGINT handler: without this, terminate() would do nothing.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _log_tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else "(no log)"


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    """Send `signum` to every process of the group; an empty group is fine."""
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the process group is still there."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_group(pgid: int, timeout_s: float) -> bool:
    """Wait until the process group is empty; whether it emptied in time."""
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _stop(process: subprocess.Popen[bytes], name: str) -> None:
    """Terminate the server, wait, kill on timeout; then the same for any process it started that outlived it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0f s of SIGTERM: killing it", name, STOP_TIMEOUT_S)
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)
    # `dagster dev` exits before its code server, which would linger until its heartbeat times out (45 s):
    # its whole session is asked to stop too, and killed if it does not.
    if _group_alive(process.pid):
        _signal_group(process.pid, signal.SIGTERM)
        if not _wait_for_group(process.pid, STOP_TIMEOUT_S):
            logger.warning("processes started by %s did not stop within %.0f s of SIGTERM: killing them",
                           name, STOP_TIMEOUT_S)
            _signal_group(process.pid, signal.SIGKILL)
    logger.info("%s stopped (exit code %s)", name, process.returncode)


@contextmanager
def serve(
    name: str, command: list[str], *, cwd: Path, env: dict[str, str], ready: Callable[[], bool], timeout_s: float
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` as a server until the block exits; the block starts once `ready()` holds."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{name}.log"
    with log_path.open("wb") as log:
        # A session of its own, so that stopping it reaches every process it started.
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_interrupts_by_default)
        logger.info("%s started (pid %d): %s", name, process.pid, " ".join(command))
        try:
            started = time.monotonic()
            while not ready():
                if process.poll() is not None:
                    pytest.fail(f"{name} exited with code {process.returncode} before it answered; its log "
                                f"({log_path}):\n{_log_tail(log_path)}", pytrace=False)
                if time.monotonic() - started > timeout_s:
                    pytest.fail(f"{name} did not answer within {timeout_s:.0f} s; its log ({log_path}):\n"
                                f"{_log_tail(log_path)}", pytrace=False)
                time.sleep(1.0)
            logger.info("%s answers after %.1f s", name, time.monotonic() - started)
            yield process
        finally:
            _stop(process, name)
