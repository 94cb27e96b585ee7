"""Typed resources and project paths, all configured from environment variables in one place.

LLMREC_DUCKDB_PATH is the one setting both dbt (transforms/profiles.yml) and Dagster read for the
warehouse; when it is unset it defaults to data/warehouse/llmrec.duckdb under LLMREC_DATA_DIR.
"""


import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource, DbtProject

from ml.data.registry import DatasetRegistry, load_registry
from orchestration.llm_resource import LLMResource

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "transforms"

DATA_DIR_ENV = "LLMREC_DATA_DIR"
WAREHOUSE_ENV = "LLMREC_DUCKDB_PATH"
REGISTRY_ENV = "LLMREC_REGISTRY"
MODEL_CACHE_ENV = "LLMREC_MODEL_CACHE"

# The pool every step that opens the warehouse runs in (limit 1 in dagster_home/dagster.yaml).
DUCKDB_POOL = "duckdb"


def data_dir() -> Path:
    """Root folder of everything the pipeline writes."""
    return Path(os.environ.get(DATA_DIR_ENV, PROJECT_ROOT / "data"))


def registry_path() -> Path:
    """Path of the dataset registry file."""
    return Path(os.environ.get(REGISTRY_ENV, PROJECT_ROOT / "datasets.yaml"))


def model_cache_dir() -> Path:
    """Where local LLMs converted from GGUF are cached (shared by every dataset and run)."""
    return Path(os.environ.get(MODEL_CACHE_ENV, data_dir() / "models"))


# dbt's profile reads this variable in its own process; giving it its default here makes the
# Dagster resource and dbt agree even when the user exported nothing.
os.environ.setdefault(WAREHOUSE_ENV, str(data_dir() / "warehouse" / "llmrec.duckdb"))


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file shared by ingestion, dbt and the data checks."""

    path: str

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the warehouse (creating its folder), closing the connection afterwards."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(self.path, read_only=read_only)
        try:
            yield con
        finally:
            con.close()


class DatasetRegistryResource(dg.ConfigurableResource):
    """The dataset registry file (datasets.yaml)."""

    path: str

    def load(self) -> DatasetRegistry:
        """Parse and validate the registry."""
        return load_registry(Path(self.path))


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# Under `dagster dev` the manifest is rebuilt on load; elsewhere `make prepare` (dbt parse) builds it.
dbt_project.prepare_if_dev()


def dbt_executable() -> str:
    """The dbt installed in this Python environment (the project venv), else the one on PATH."""
    # sys.prefix, not sys.executable: Dagster's code server may run the venv's interpreter by its
    # resolved path, whose folder has no dbt, while sys.prefix still names the venv.
    beside = Path(sys.prefix) / "bin" / "dbt"
    return str(beside) if beside.is_file() else shutil.which("dbt") or "dbt"


class ArtifactStoreResource(dg.ConfigurableResource):
    """The folder tree for files the pipeline writes next to the warehouse, and the local model cache."""

    root: str
    model_cache: str

    def model_cache_dir(self) -> Path:
        """Local LLMs converted once from GGUF (shared by every dataset and run)."""
        return Path(self.model_cache)

    def embeddings_root(self) -> Path:
        """Versioned Parquet embeddings: <root>/embeddings/<dataset>/<name>/<version>/."""
        return Path(self.root) / "embeddings"


def pipeline_resources(
    warehouse: str | dg.EnvVar, registry_file: Path, artifacts_root: Path | None = None
) -> dict[str, dg.ConfigurableResource]:
    """The resources every asset needs, for a given warehouse and registry (tests pass temporary ones)."""
    return {
        "warehouse": WarehouseResource(path=warehouse),
        "registry": DatasetRegistryResource(path=str(registry_file)),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
        "artifacts": ArtifactStoreResource(root=str(artifacts_root or data_dir()), model_cache=str(model_cache_dir())),
        "llm": LLMResource(),
    }


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources the definitions bind: the warehouse path is read from its env var at run time."""
    return pipeline_resources(dg.EnvVar(WAREHOUSE_ENV), registry_path())
