"""Opening the warehouse while another process holds its lock: a short wait, then a clear error."""

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from ml.data.warehouse import WarehouseLocked, open_warehouse

HOLD = "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(float(sys.argv[2]))"


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process that opens `path` for writing, says so, and keeps it open for `seconds`."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_lock_held_past_the_wait_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    holder = _hold_lock(path, 600)
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseLocked, match="locked by another process") as failure:
            with open_warehouse(path, read_only=True, wait_s=1.0):
                pass
        assert 1.0 <= time.monotonic() - started < 10
        assert isinstance(failure.value.__cause__, duckdb.IOException)
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_released_within_the_wait_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with open_warehouse(path) as con:
        con.execute("create table t as select 42 as answer")
    holder = _hold_lock(path, 2)
    try:
        with open_warehouse(path, read_only=True, wait_s=60) as con:
            assert con.execute("select answer from t").fetchone() == (42,)
    finally:
        holder.wait()


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    with pytest.raises(duckdb.Error):
        with open_warehouse(tmp_path / "missing.duckdb", read_only=True, wait_s=60):
            pass
