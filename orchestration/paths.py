"""Project paths and the environment variables that move them; importable without Dagster.

The command line's `recommend` and `rollback` read only these, so they answer without loading the
asset definitions.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "transforms"

DATA_DIR_ENV = "LLMREC_DATA_DIR"
WAREHOUSE_ENV = "LLMREC_DUCKDB_PATH"
REGISTRY_ENV = "LLMREC_REGISTRY"
MODEL_CACHE_ENV = "LLMREC_MODEL_CACHE"
MLFLOW_DIR_ENV = "LLMREC_MLFLOW_DIR"


def data_dir() -> Path:
    """Root folder of everything the pipeline writes."""
    return Path(os.environ.get(DATA_DIR_ENV, PROJECT_ROOT / "data"))


def registry_path() -> Path:
    """Path of the dataset registry file."""
    return Path(os.environ.get(REGISTRY_ENV, PROJECT_ROOT / "datasets.yaml"))


def model_cache_dir() -> Path:
    """Where local LLMs converted from GGUF are cached (shared by every dataset and run)."""
    return Path(os.environ.get(MODEL_CACHE_ENV, data_dir() / "models"))


def mlflow_dir() -> Path:
    """The MLflow tracking store: mlflow.db (runs, metrics, model registry) and artifacts/ beside it."""
    return Path(os.environ.get(MLFLOW_DIR_ENV, data_dir() / "mlflow"))


def warehouse_path() -> Path:
    """The DuckDB warehouse file: LLMREC_DUCKDB_PATH, else data/warehouse/llmrec.duckdb under the data folder."""
    return Path(os.environ.get(WAREHOUSE_ENV, data_dir() / "warehouse" / "llmrec.duckdb"))
