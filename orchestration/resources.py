"""Typed Dagster resources, configured from the environment variables and paths of `orchestration/paths.py`.

LLMREC_DUCKDB_PATH is the one setting both dbt (transforms/profiles.yml) and Dagster read for the
warehouse; when it is unset it defaults to data/warehouse/llmrec.duckdb under LLMREC_DATA_DIR.
"""


import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource, DbtProject
from pydantic import Field, field_validator

from ml.data.registry import DatasetRegistry, load_registry
from ml.data.warehouse import open_warehouse
from ml.llm.local_server import llama_server
from ml.llm.weights import PACKAGED_SMOLLM2, file_digest, packaged_smollm2_gguf, resolve_causal_lm
from ml.profiles.backends import ChatBackend, DecodingSettings, OpenAICompatibleBackend
from ml.profiles.local_backend import TransformersBackend
from ml.tracking.mlflow_store import TrackingStore
from orchestration.paths import (  # re-exported: the asset modules import paths from here
    DBT_PROJECT_DIR,
    WAREHOUSE_ENV,
    data_dir,
    mlflow_dir,
    model_cache_dir,
    registry_path,
    warehouse_path,
)

# The pool every step that opens the warehouse runs in (limit 1 in dagster_home/dagster.yaml).
DUCKDB_POOL = "duckdb"


# dbt's profile reads this variable in its own process; giving it its default here makes the
# Dagster resource and dbt agree even when the user exported nothing.
os.environ.setdefault(WAREHOUSE_ENV, str(warehouse_path()))


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file shared by ingestion, dbt and the data checks."""

    path: str
    lock_wait_s: float = Field(default=60.0, description="How long to wait for another process's lock on the file "
                               "before failing with a clear message.")

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the warehouse (creating its folder), closing the connection afterwards."""
        with open_warehouse(self.path, read_only=read_only, wait_s=self.lock_wait_s) as con:
            yield con


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

    def checkpoints_root(self) -> Path:
        """Trained models: <root>/checkpoints/<dataset>/<model>/<version>/ (see ml/models/checkpoints.py)."""
        return Path(self.root) / "checkpoints"

    def partial_training_path(self, dataset: str, model: str) -> Path:
        """A training run's resumable state while it trains: <root>/partial_training/<dataset>/<model>.pt."""
        return Path(self.root) / "partial_training" / dataset / f"{model}.pt"

    def results_root(self) -> Path:
        """Evaluation results: <root>/results/<dataset>/results.json and the recall curve plot."""
        return Path(self.root) / "results"

    def indexes_root(self) -> Path:
        """Published faiss indexes: <root>/indexes/<dataset>/<version>/ and a CURRENT pointer."""
        return Path(self.root) / "indexes"


class MlflowResource(dg.ConfigurableResource):
    """The local MLflow tracking store (sqlite + artifact folder) every training and evaluation step logs to."""

    root: str

    def store(self) -> TrackingStore:
        """The store at `root` (created on first use)."""
        return TrackingStore(Path(self.root))


# Only variables with this prefix may hold an LLM API key (see LLMResource.api_key_env).
API_KEY_ENV_PREFIX = "LLMREC_"


class LLMResource(dg.ConfigurableResource):
    """Which LLM generates profiles: a local transformers model, a local llama.cpp server, or any OpenAI-style API."""

    backend: Literal["transformers", "llama_cpp_server", "openai"] = Field(
        default="transformers",
        description="transformers: local causal LM, batched; llama_cpp_server: start llama.cpp's OpenAI-compatible "
        "server on a GGUF file for the run; openai: an OpenAI-compatible server at base_url (vLLM, Ollama, OpenAI).",
    )
    model: str = Field(
        default=PACKAGED_SMOLLM2,
        description=f"transformers: {PACKAGED_SMOLLM2!r} (packaged), a .gguf file or a local model folder; "
        "llama_cpp_server: the packaged name or a .gguf file; openai: the server's model name.",
    )
    base_url: str = Field(default="http://127.0.0.1:8000/v1", description="openai backend only.")
    api_key_env: str = Field(default="LLMREC_LLM_API_KEY", description="Env var holding the API key (openai); "
                             f"its name must start with {API_KEY_ENV_PREFIX}.")
    max_new_tokens: int = 160
    temperature: float = Field(default=0.0, description="0 = greedy, deterministic.")
    repeat_penalty: float = Field(default=1.15, description="Small models loop without one.")
    seed: int = 0
    batch_size: int = Field(default=16, description="Prompts per forward pass (transformers) or requests in flight; "
                            "16 gave 42 tokens/s on 2 CPU cores against 4.7 at 1 (benchmarks/profile_benchmark.py).")
    timeout_s: float = 120.0
    max_retries: int = 3
    threads: int = Field(default=2, description="CPU threads of the llama.cpp server.")
    device: str = "auto"

    @field_validator("api_key_env")
    @classmethod
    def _key_variable_is_ours(cls, name: str) -> str:
        # Anyone who can launch a run sets this: any variable would leak its value as a bearer token to base_url.
        if not re.fullmatch(rf"{API_KEY_ENV_PREFIX}[A-Z0-9_]+", name):
            raise ValueError(f"api_key_env must name a variable {API_KEY_ENV_PREFIX}<UPPER_CASE>, got {name!r}")
        return name

    def decoding(self) -> DecodingSettings:
        """The decoding settings every backend shares."""
        return DecodingSettings(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, repeat_penalty=self.repeat_penalty,
            seed=self.seed,
        )

    def _gguf(self) -> Path:
        return packaged_smollm2_gguf() if self.model == PACKAGED_SMOLLM2 else Path(self.model).expanduser()

    @contextmanager
    def open_backend(self, model_cache: Path) -> Iterator[ChatBackend]:
        """The configured backend, ready to generate (a llama.cpp server lives as long as the context)."""
        if self.backend == "transformers":
            model_dir = resolve_causal_lm(self.model, model_cache)
            yield TransformersBackend(model_dir, self.decoding(), batch_size=self.batch_size, device=self.device)
        elif self.backend == "llama_cpp_server":
            gguf = self._gguf()
            with llama_server(gguf, alias="local", threads=self.threads) as base_url:
                yield OpenAICompatibleBackend(
                    base_url, "local", api_key="", decoding=self.decoding(), concurrency=1, timeout_s=self.timeout_s,
                    max_retries=self.max_retries, model_id=f"llama.cpp:{gguf.stem}:{file_digest(gguf)}",
                )
        else:
            yield OpenAICompatibleBackend(
                self.base_url, self.model, api_key=os.environ.get(self.api_key_env, ""), decoding=self.decoding(),
                concurrency=self.batch_size, timeout_s=self.timeout_s, max_retries=self.max_retries,
            )


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
        "mlflow": MlflowResource(root=str(artifacts_root / "mlflow" if artifacts_root else mlflow_dir())),
    }


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources the definitions bind: the warehouse path is read from its env var at run time."""
    return pipeline_resources(dg.EnvVar(WAREHOUSE_ENV), registry_path())
