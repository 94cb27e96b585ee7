"""Train EAGER: every training position as an example, Adam with warm-up, early stopping on validation NDCG@10.

Examples: for each user's training sequence s and every position i >= 1, history = the last
`max_len` items of s[:i], target = s[i] (the paper's leave-one-out setting with histories cut to 20).
Batches are drawn by a random permutation (a generator seeded from the config), sorted by history
length within buckets of `bucket_batches` batches so that a batch is only as wide as its longest
history (`ml.train.sasrec_training.bucketed_batches`); every example weighs the same in the loss
whatever its batch (a sum over examples divided by the nominal batch size). The loss is
`ml/train/eager_loss.py`'s, and validation runs the full inference path (constrained beam search in
every stream, merged by confidence) through the shared full-ranking evaluator, so the epoch kept is
the one whose beam ranking is best, not the one whose teacher-forced loss is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ml.data.sequences import SequenceData
from ml.encoders.device import resolve_device
from ml.evaluate.ranking import DEFAULT_KS, evaluate_model
from ml.models.eager import EAGER, EAGERConfig, StreamCodes
from ml.train.eager_loss import EAGERLosses, eager_losses
from ml.train.early_stopping import EpochCallback, epoch_budget, fit_with_early_stopping, step_budget
from ml.train.results import TrainingResult
from ml.train.resume import (
    Counters,
    PartialTraining,
    ResumePolicy,
    TorchGeneratorState,
    array_digest,
    training_identity,
)
from ml.train.sasrec_training import batches_per_epoch, bucketed_batches
from ml.train.schedules import lr_multiplier

logger = logging.getLogger(__name__)


@dataclass
class EAGERResult(TrainingResult[EAGER, EAGERConfig]):
    """A trained EAGER (eval mode, best validation weights) and how training went."""


def next_item_examples(train: Sequence[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(histories (n, max_len) left-padded, targets (n,)): one example per training position after the first."""
    histories, targets = [], []
    for sequence in train:
        for position in range(1, len(sequence)):
            window = sequence[max(0, position - max_len):position]
            row = np.zeros(max_len, dtype=np.int64)
            row[max_len - len(window):] = window
            histories.append(row)
            targets.append(sequence[position])
    if not targets:
        return torch.zeros((0, max_len), dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.from_numpy(np.stack(histories)), torch.as_tensor(np.asarray(targets, dtype=np.int64))


def eager_step(model: EAGER, histories: torch.Tensor, targets: torch.Tensor, nominal_batch: int,
               generator: torch.Generator, optimizer: torch.optim.Optimizer) -> EAGERLosses:
    """One optimizer step on a batch of (left-padded) histories and their targets; the losses it took."""
    # Cut the columns that are padding in every row (outputs do not depend on them).
    width = max(1, int((histories != 0).sum(dim=1).max()))
    device = model.device
    losses = eager_losses(model, histories[:, -width:].to(device), targets.to(device), nominal_batch, generator)
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    optimizer.step()
    return losses


def train_eager(
    data: SequenceData, streams: dict[str, StreamCodes], config: EAGERConfig | None = None,
    on_epoch: EpochCallback | None = None, resume: ResumePolicy | None = None,
) -> EAGERResult:
    """Train on the training split; keep the epoch with the best validation NDCG@10 of the beam ranking.

    With `resume`, the whole training state is saved at epoch ends on its timer and a matching saved
    state is continued (`ml/train/resume.py`).
    """
    config = config or EAGERConfig()
    torch.manual_seed(config.seed)
    device = torch.device(resolve_device(config.device))
    model = EAGER(data.n_items, streams, config).to(device)
    histories, targets = next_item_examples(data.train, config.max_len)
    if len(targets) == 0:
        raise ValueError("no user has two or more training items: nothing to train on")
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    lengths = (histories != 0).sum(dim=1)
    steps_per_epoch = batches_per_epoch(len(targets), config.batch_size, config.bucket_batches)
    budget = epoch_budget(steps_per_epoch, config.max_epochs, config.eval_every, config.max_steps,
                          config.eval_every_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(
        config.lr_schedule, config.warmup_steps, step_budget(steps_per_epoch, budget.max_epochs, config.max_steps)))
    valid_histories, valid_targets = data.history("valid")
    logger.info("EAGER on %s: %d items, %d examples, %d steps per epoch, up to %d epochs (validation every %d), "
                "streams %s, device %s", data.dataset, data.n_items, len(targets), steps_per_epoch,
                budget.max_epochs, budget.eval_every, "+".join(config.active_streams), device)

    # Optimizer steps over all epochs: `max_steps` ends training mid-epoch, exactly.
    counters = Counters(steps_taken=0)

    def train_epoch() -> dict[str, float]:
        model.train()
        sums: dict[str, float] = {}
        steps = 0
        for batch in bucketed_batches(lengths, config.batch_size, generator, config.bucket_batches):
            if config.max_steps is not None and counters["steps_taken"] >= config.max_steps:
                break
            losses = eager_step(model, histories[batch], targets[batch], config.batch_size, generator, optimizer)
            scheduler.step()
            steps += 1
            counters["steps_taken"] += 1
            for name, value in {"loss": float(losses.total.detach()), **losses.terms}.items():
                sums[name] = sums.get(name, 0.0) + value
        record = {name: value / max(1, steps) for name, value in sums.items()}
        record["lr"] = scheduler.get_last_lr()[0]
        record["steps"] = float(steps)
        return record

    def validate() -> dict[str, float]:
        return evaluate_model(model.score, valid_histories, valid_targets, config.eval_batch_size, DEFAULT_KS).metrics

    partial = None if resume is None else PartialTraining(
        resume, training_identity(config, data, **{
            f"{stream}_codes": array_digest(codes.codes, codes.features) for stream, codes in streams.items()}),
        {"optimizer": optimizer, "scheduler": scheduler, "batches": TorchGeneratorState(generator),
         "counters": counters})
    outcome = fit_with_early_stopping(model, train_epoch, validate, budget.max_epochs, config.patience,
                                      budget.eval_every, on_epoch, name="EAGER", partial=partial)
    return EAGERResult(model=model, config=config, best_epoch=outcome.best_epoch, best_valid=outcome.best_valid,
                       history=outcome.history)
