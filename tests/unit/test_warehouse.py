"""Opening the warehouse: a short wait for another process's lock, then a clear error; its memory cap."""

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from ml.data.warehouse import (
    MEMORY_LIMIT_ENV,
    WarehouseLocked,
    memory_capped,
    memory_limit,
    open_warehouse,
    size_bytes,
)

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


def test_memory_cap_comes_from_the_environment_and_a_block_can_only_lower_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMREC_DUCKDB_MEMORY_LIMIT caps every warehouse connection; `memory_capped` lowers it for a block."""
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "3GB")
    with open_warehouse(tmp_path / "w.duckdb") as con:
        def current_gb() -> float:  # DuckDB reports the cap cut to one decimal, e.g. 3GB as "2.7 GiB"
            row = con.execute("select current_setting('memory_limit')").fetchone()
            assert row is not None
            return size_bytes(str(row[0])) / 1e9
        assert current_gb() == pytest.approx(3.0, rel=0.1)
        with memory_capped(con, "1GB"):
            assert current_gb() == pytest.approx(1.0, rel=0.1)
        assert current_gb() == pytest.approx(3.0, rel=0.1)
        with memory_capped(con, "8GB"):  # never raised above the connection's cap
            assert current_gb() == pytest.approx(3.0, rel=0.1)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match=MEMORY_LIMIT_ENV):
        memory_limit()
