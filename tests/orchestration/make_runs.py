"""Run `make` in the project as a user types it, on a temporary registry, warehouse, data folder and instance."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestration.paths import PROJECT_ROOT

# Laid over the tiny training preset: a few profiles of at most 48 tokens, one-layer models, a few epochs.
RUN_CONFIG = Path(__file__).parent / "tiny_run_config.yaml"


def make_environment(tmp_path: Path, registry: Path, warehouse: Path) -> dict[str, str]:
    """What `make` needs to run on a temporary registry, warehouse, data folder and Dagster instance."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", dagster_home)
    return {**os.environ, "LLMREC_REGISTRY": str(registry), "LLMREC_DUCKDB_PATH": str(warehouse),
            "LLMREC_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(dagster_home)}


def run_make(env: dict[str, str], *arguments: str) -> str:
    """Run `make <arguments>` at the tiny preset and LLM budgets; its output, or the test fails with the tail of it."""
    result = subprocess.run(["make", *arguments, "PRESET=tiny", f"CONFIG={RUN_CONFIG}"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"make {' '.join(arguments)} exited {result.returncode}:\n{result.stdout[-8000:]}\n"
                    f"{result.stderr[-8000:]}")
    return result.stdout
