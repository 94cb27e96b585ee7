"""What a training function returns: the selected model, its config, and how training went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

ModelT = TypeVar("ModelT")
ConfigT = TypeVar("ConfigT")


@dataclass
class TrainingResult(Generic[ModelT, ConfigT]):
    """A trained model (eval mode, best validation weights), its config, the selected epoch and the history."""

    model: ModelT
    config: ConfigT
    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # facts for the checkpoint manifest and MLflow
