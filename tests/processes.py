"""Helpers for tests that run real processes beside the one under test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pytest


@contextmanager
def warehouse_locked_by_another_process(path: str) -> Iterator[None]:
    """A second Python process holding a read-write DuckDB connection to `path` for the duration."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', "
         "flush=True); time.sleep(600)", path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(path, read_only=True)
        yield
    finally:
        holder.kill()
        holder.wait()
