"""The epoch loop every trained model shares: train, validate, keep the best weights, stop when patience runs out.

Selection is on validation only (NDCG@10 by default); the test split never reaches this loop. The
model's `state_dict()` is deep-copied each time validation improves and loaded back at the end, so the
caller gets the selected epoch's model, in eval mode. Patience counts validations, not epochs (as
RecBole's `stopping_step`), so it means the same whether validation runs every epoch or every 40.

Budgets scale with the data through `epoch_budget`: a trainer may be given an optimizer-step budget
and a validation interval in steps, which become an epoch count and an epoch interval for its
dataset, so that 80 steps on a 943-user dataset and 1,800 on a 22k-user one get the same treatment.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ml.train.resume import PartialTraining

logger = logging.getLogger(__name__)

SELECTION_METRIC = "ndcg@10"

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class EpochBudget:
    """How many epochs to run and how often to validate, for one dataset's steps per epoch."""

    max_epochs: int
    eval_every: int


def epoch_budget(steps_per_epoch: int, max_epochs: int, eval_every: int, max_steps: int | None = None,
                 eval_every_steps: int | None = None) -> EpochBudget:
    """Epochs = min(max_epochs, ceil(max_steps / steps_per_epoch)); eval interval from steps when given.

    `max_steps` caps the optimizer steps (None = no cap beyond max_epochs); `eval_every_steps`, when
    set, replaces `eval_every` (epochs) by the number of epochs that holds at least that many steps.
    """
    steps_per_epoch = max(1, steps_per_epoch)
    epochs = max_epochs if max_steps is None else min(max_epochs, max(1, math.ceil(max_steps / steps_per_epoch)))
    every = eval_every if eval_every_steps is None else max(1, math.ceil(eval_every_steps / steps_per_epoch))
    return EpochBudget(max_epochs=epochs, eval_every=min(every, epochs))


def step_budget(steps_per_epoch: int, max_epochs: int, max_steps: int | None = None) -> int:
    """The optimizer steps a run takes at most: `max_steps`, else `max_epochs` whole epochs (what a decay ends at)."""
    whole_epochs = max(1, steps_per_epoch) * max_epochs
    return whole_epochs if max_steps is None else min(max_steps, whole_epochs)


@dataclass
class EarlyStoppingOutcome:
    """Which epoch was kept, its validation metrics, and one record per epoch run."""

    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def fit_with_early_stopping(
    model: nn.Module,
    train_epoch: Callable[[], dict[str, float]],
    validate: Callable[[], dict[str, float]],
    max_epochs: int,
    patience: int,
    eval_every: int = 1,
    on_epoch: EpochCallback | None = None,
    selection_metric: str = SELECTION_METRIC,
    name: str = "model",
    partial: PartialTraining | None = None,
) -> EarlyStoppingOutcome:
    """Run up to `max_epochs` epochs; keep the weights of the best validation `selection_metric`.

    `train_epoch()` trains one epoch and returns its record (at least "loss"); `validate()` returns the
    validation metrics, which are added to the record as valid_<metric>. Validation runs every
    `eval_every` epochs and after the last one; training stops once `patience` validations in a row
    have not beaten the best score. The model ends in eval mode with the best weights loaded.

    With `partial` (`ml/train/resume.py`), a matching saved state is resumed after its epoch, and the
    whole state is saved at epoch ends on its timer, before `on_epoch` runs, and removed at the end.
    """
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_valid = float("-inf"), 0, {}
    validations_since_best = 0
    best_state = copy.deepcopy(model.state_dict())
    first_epoch = 1
    saved = partial.restore(model) if partial is not None else None
    if saved is not None:
        history, best_state = saved["history"], saved["best_state"]
        best_score, best_epoch, best_valid = saved["best_score"], saved["best_epoch"], saved["best_valid"]
        validations_since_best, first_epoch = saved["validations_since_best"], saved["epoch"] + 1
        if validations_since_best >= patience:  # saved at the epoch that stopped it: nothing left to run
            first_epoch = max_epochs + 1
    for epoch in range(first_epoch, max_epochs + 1):
        started = time.perf_counter()
        record: dict[str, float] = {"epoch": epoch, **train_epoch()}
        record["seconds"] = time.perf_counter() - started
        if epoch % eval_every == 0 or epoch == max_epochs:
            started = time.perf_counter()
            valid = validate()
            record.update({f"valid_{metric}": value for metric, value in valid.items()})
            record["eval_seconds"] = time.perf_counter() - started
            if valid[selection_metric] > best_score:
                best_score, best_epoch, best_valid = valid[selection_metric], epoch, valid
                best_state = copy.deepcopy(model.state_dict())
                validations_since_best = 0
            else:
                validations_since_best += 1
        history.append(record)
        logger.info("%s epoch %d: %s", name, epoch, {k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if partial is not None:
            partial.maybe_save(model, {"epoch": epoch, "history": history, "best_state": best_state,
                                       "best_score": best_score, "best_epoch": best_epoch, "best_valid": best_valid,
                                       "validations_since_best": validations_since_best})
        if on_epoch is not None:
            on_epoch(epoch, record)
        if validations_since_best >= patience:
            logger.info("%s: early stop after epoch %d, best %s %.4f at epoch %d", name, epoch, selection_metric,
                        best_score, best_epoch)
            break
    if partial is not None:
        partial.finish()
    model.load_state_dict(best_state)
    model.eval()
    return EarlyStoppingOutcome(best_epoch=best_epoch, best_valid=best_valid, history=history)
