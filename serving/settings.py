"""The service's typed settings, read from the environment (`LLMREC_SERVING_*`) with safe defaults."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_ENV = "LLMREC_DATA_DIR"  # the pipeline's data folder (orchestration/resources.py reads the same)
TOKEN_ENV = "LLMREC_SERVING_TOKEN"


class ServingSettings(BaseModel):
    """Where the indexes are, how the service binds, and the bounds every request is held to."""

    data_dir: Path = Field(default=PROJECT_ROOT / "data", description="The pipeline's data folder.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    token: SecretStr | None = Field(default=None, description="Bearer token; required off loopback.")
    poll_seconds: float = Field(default=1.0, gt=0, description="How often CURRENT is re-read (a swap is seen "
                                                              "within this plus one load).")
    max_k: int = Field(default=1000, ge=1)
    max_history: int = Field(default=200, ge=1, description="Items a posted history may hold.")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    dagster_url: str | None = Field(default=None, description="Dagster UI base URL, for lineage links.")
    mlflow_url: str | None = Field(default=None, description="MLflow UI base URL, for lineage links.")

    @property
    def indexes_root(self) -> Path:
        """The folder of published index versions, one subfolder per dataset."""
        return self.data_dir / "indexes"

    @property
    def checkpoints_root(self) -> Path:
        """The folder of model checkpoints the index versions name."""
        return self.data_dir / "checkpoints"

    def require_token_off_loopback(self) -> None:
        """Refuse to serve beyond this machine without a token: anyone on the network could query it."""
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(f"binding {self.host} (not loopback) needs a bearer token in ${TOKEN_ENV}")

    @classmethod
    def from_env(cls, **overrides: object) -> ServingSettings:
        """Settings from `LLMREC_DATA_DIR`, `LLMREC_SERVING_TOKEN` and `LLMREC_SERVING_<FIELD>`, then overrides."""
        values: dict[str, object] = {}
        if os.environ.get(DATA_DIR_ENV):
            values["data_dir"] = Path(os.environ[DATA_DIR_ENV])
        if os.environ.get(TOKEN_ENV):
            values["token"] = os.environ[TOKEN_ENV]
        for name in cls.model_fields:
            value = os.environ.get(f"LLMREC_SERVING_{name.upper()}")
            if value is not None and name not in ("data_dir", "token"):
                values[name] = value
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.model_validate(values)


def is_loopback(host: str) -> bool:
    """Whether `host` binds only this machine (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname other than localhost may resolve anywhere
