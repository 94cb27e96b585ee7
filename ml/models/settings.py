"""One setting of a model's config dataclass: its default and what it means, held once.

The library dataclasses (`SASRecConfig`, `EAGERConfig`, ...) hold every default of their model; the
orchestration layer builds the Dagster run config from them (`orchestration/asset_config.py`) and
shows these descriptions in the launchpad, so neither the default nor its meaning is written twice.
"""

from dataclasses import Field, field
from typing import Any

# Descriptions of the training-loop settings several models share (each model keeps its own default).
MAX_EPOCHS = "Upper bound; max_steps and early stopping end sooner."
PATIENCE = "Validations in a row without a better NDCG@10 before stopping."
EVAL_EVERY = "Epochs between validations."
EVAL_EVERY_STEPS = "Validate every this many steps (rounded up to whole epochs); null = every eval_every epochs."
DEVICE = "auto = cuda when available, else cpu."
STEP_BUDGET = "Optimizer-step budget (null = max_epochs only)."
EPOCH_CAPPING_STEP_BUDGET = ("Optimizer-step budget: caps the epochs at ceil(max_steps / steps per epoch) (null = "
                             "max_epochs only).")
SCORED_USERS = "Users scored at once during validation (memory: batch x n_items floats)."
WARMUP_LR_SCHEDULE = ("constant = warm-up, then flat; inverse_sqrt = warm-up, then lr x sqrt(warmup / step); cosine "
                      "= decay to 0 at the step budget.")


def setting(default: Any, description: str) -> Any:
    """A dataclass field with `default` and a one-line `description` (read by the Dagster config built from it)."""
    return field(default=default, metadata={"description": description})


def description_of(dataclass_field: Field[Any]) -> str | None:
    """The description `setting` attached to a dataclass field, or None."""
    return dataclass_field.metadata.get("description")
