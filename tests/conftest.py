"""Shared test set-up: a parsed dbt manifest (once per session) and a warehouse on a temp DuckDB."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TRANSFORMS = PROJECT_ROOT / "transforms"
DBT = str(Path(sys.executable).parent / "dbt")

# Tests never touch the project's own warehouse or data folder: default every run to throwaway ones.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="llmrec-tests-"))
os.environ["LLMREC_DUCKDB_PATH"] = str(_SESSION_DIR / "session.duckdb")
os.environ["LLMREC_DATA_DIR"] = str(_SESSION_DIR / "data")
# One GGUF -> safetensors conversion per test session (about 40 s), shared by every test that needs the local LLM.
os.environ["LLMREC_MODEL_CACHE"] = str(_SESSION_DIR / "models")


def run_dbt(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the project's dbt with the given arguments; fail the test with dbt's output if it fails."""
    result = subprocess.run(
        [DBT, *args, "--project-dir", str(TRANSFORMS), "--profiles-dir", str(TRANSFORMS)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"dbt {' '.join(args)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}")
    return result


def pytest_configure(config: pytest.Config) -> None:
    """Parse the dbt project once, before collection: orchestration modules load its manifest."""
    run_dbt("parse", "--quiet")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that loads the packaged LLM (the `local_llm_dir` fixture, directly or not) is in the `llm` tier."""
    for item in items:
        if "local_llm_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.llm)


@pytest.fixture
def warehouse_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh DuckDB file for one test, exported the way dbt and Dagster read it."""
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("LLMREC_DUCKDB_PATH", str(path))
    return path


@pytest.fixture(scope="session")
def local_llm_dir() -> Path:
    """The packaged SmolLM2-135M-Instruct, converted from its GGUF into this session's model cache."""
    from ml.llm.weights import PACKAGED_SMOLLM2, resolve_causal_lm

    return resolve_causal_lm(PACKAGED_SMOLLM2, Path(os.environ["LLMREC_MODEL_CACHE"]))
