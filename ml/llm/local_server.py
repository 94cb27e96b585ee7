"""Run llama-cpp-python's OpenAI-compatible server on a local GGUF model, on a loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import requests


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def llama_server(
    gguf: Path, alias: str = "local", threads: int = 2, context: int = 2048, log: IO[str] | None = None,
    startup_timeout_s: float = 120.0,
) -> Iterator[str]:
    """Start `python -m llama_cpp.server` on `gguf`; yield its base URL (…/v1); stop it on exit."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(context), "--n_threads", str(threads)],
        stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise ServerStartError(f"llama.cpp server exited with {process.returncode}")
            try:
                if requests.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(f"llama.cpp server did not answer within {startup_timeout_s:.0f} s")
            time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
