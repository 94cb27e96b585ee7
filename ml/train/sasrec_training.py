"""Train SASRec with full softmax cross-entropy and early stopping on validation NDCG@10.

Every position of every training sequence is a training example (inputs seq[:-1] -> targets seq[1:],
the most recent max_len + 1 items, left-padded). Logits over all items are computed only at real
(non-padding) positions: with 12k items a (batch, max_len, n_items) tensor would dominate memory,
while most positions of short, left-padded sequences are padding.

The loss weights every real position the same, whatever the batching: a batch's loss is the *sum* of
its positions' cross-entropies divided by the epoch's mean positions per batch (a constant), not the
batch's own mean. With length-bucketed batches a per-batch mean gave the 3-position users about half
of the gradient for a fifth of the positions, and cost a third of SASRec's accuracy on Beauty (see
benchmarks/README.md); with the constant divisor an epoch's summed gradient is exactly that of the mean
over all positions, so bucketing only changes which positions share a step. Validation uses the shared
full-ranking evaluator (history = training items, target = validation item); the test split is never
looked at here. Runs are deterministic on CPU for a given seed (shuffling has its own generator);
on CUDA, PyTorch's scatter-add kernels may still differ in the last bits between runs.
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
from ml.evaluate.slices import item_train_counts
from ml.models.sasrec import SASRec, SASRecConfig, log_popularity
from ml.train.early_stopping import EpochCallback, epoch_budget, fit_with_early_stopping
from ml.train.full_softmax import LogitBuffer, full_softmax_cross_entropy
from ml.train.popularity_adjustment import choose_popularity_adjustment
from ml.train.results import TrainingResult
from ml.train.resume import PartialTraining, ResumePolicy, TorchGeneratorState, training_identity
from ml.train.schedules import lr_multiplier

logger = logging.getLogger(__name__)


@dataclass
class SASRecResult(TrainingResult[SASRec, SASRecConfig]):
    """A trained SASRec, or a subclass such as ContentSASRec (eval mode, best validation weights), and how training
    went; `extra` holds the popularity adjustment's facts."""

    def item_embeddings(self) -> np.ndarray:
        """(n_items, hidden_dim) float32 item embeddings; row i is item index i + 1 (padding row dropped)."""
        return self.model.catalogue_matrix().detach().cpu().numpy().astype(np.float32)


def training_pairs(train: Sequence[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (inputs, targets), each (n_sequences, max_len) int64, from sequences of at least two items."""
    usable = [seq[-(max_len + 1):] for seq in train if len(seq) >= 2]
    inputs = np.zeros((len(usable), max_len), dtype=np.int64)
    targets = np.zeros((len(usable), max_len), dtype=np.int64)
    for row, seq in enumerate(usable):
        n = len(seq) - 1
        inputs[row, max_len - n:] = seq[:-1]
        targets[row, max_len - n:] = seq[1:]
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def bucketed_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator, bucket_batches: int = 32
) -> list[torch.Tensor]:
    """Shuffled batches of row indices in which rows have similar lengths (a random order every epoch).

    Rows are shuffled, cut into buckets of `bucket_batches` batches, sorted by length inside each
    bucket and batched; then the batch order is shuffled. Batches are as random as a plain shuffle
    at the bucket scale, but each is only as wide as its longest row, which on short leave-one-out
    sequences removes most of the padding the attention layers would otherwise compute.
    """
    order = torch.randperm(len(lengths), generator=generator)
    batches: list[torch.Tensor] = []
    bucket = batch_size * bucket_batches
    for start in range(0, len(order), bucket):
        rows = order[start : start + bucket]
        rows = rows[torch.argsort(lengths[rows], stable=True)]
        batches += list(rows.split(batch_size))
    return [batches[index] for index in torch.randperm(len(batches), generator=generator).tolist()]


def position_batches(
    lengths: torch.Tensor, positions_per_batch: float, generator: torch.Generator, bucket_batches: int = 32
) -> list[torch.Tensor]:
    """Shuffled batches of rows holding about `positions_per_batch` real positions each (token-budget batching).

    Rows are shuffled, cut into buckets of about `bucket_batches` batches' worth of positions, sorted by
    length inside each bucket and cut greedily wherever the running position count reaches the budget;
    then the batch order is shuffled. Short sequences travel in wide batches and long ones in narrow
    batches, so every step carries about the same number of positions (as a shuffled user batch does
    on average) while hardly any padding is computed. A row longer than the budget is a batch alone.
    """
    order = torch.randperm(len(lengths), generator=generator)
    budget = max(1.0, positions_per_batch)
    cumulative = torch.cumsum(lengths[order].double(), dim=0)
    bucket_ids = torch.floor((cumulative - 1) / (budget * bucket_batches)).long() if len(order) else cumulative.long()
    batches: list[torch.Tensor] = []
    for bucket in torch.unique_consecutive(bucket_ids):
        rows = order[bucket_ids == bucket]
        rows = rows[torch.argsort(lengths[rows], stable=True)]
        running = torch.cumsum(lengths[rows].double(), dim=0)
        cut_ids = torch.floor((running - 1) / budget).long()
        batches += [rows[cut_ids == cut] for cut in torch.unique_consecutive(cut_ids)]
    return [batches[index] for index in torch.randperm(len(batches), generator=generator).tolist()]


def epoch_batches(lengths: torch.Tensor, config: SASRecConfig, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of row indices, by `config.batching` (users per batch or positions per batch)."""
    if config.batching == "positions":
        mean_length = float(lengths.sum()) / max(1, len(lengths))
        return position_batches(lengths, config.batch_size * mean_length, generator, config.bucket_batches)
    return bucketed_batches(lengths, config.batch_size, generator, config.bucket_batches)


def batches_per_epoch(n_rows: int, batch_size: int, bucket_batches: int = 32) -> int:
    """How many batches `bucketed_batches` cuts `n_rows` rows into (it depends on the count only, not the lengths)."""
    bucket = batch_size * bucket_batches
    full, rest = divmod(n_rows, bucket)
    return full * bucket_batches + -(-rest // batch_size)


def batch_loss(
    model: SASRec, inputs: torch.Tensor, targets: torch.Tensor, positions_per_batch: float,
    logit_offset: torch.Tensor | None = None, logit_buffer: LogitBuffer | None = None,
) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy of the batch's real positions / positions_per_batch, number of real positions).

    Dividing by the epoch's mean positions per batch rather than this batch's own count weights every
    real position of the epoch the same, however the batches were cut. `logit_offset` (n_items,) is added
    to the training logits only (a logit-adjusted loss); `logit_buffer` is reused for the logits.
    """
    # Drop the columns that are padding in every row of this batch (outputs do not depend on them).
    width = max(1, int((targets != 0).sum(dim=1).max()))
    inputs, targets = inputs[:, -width:].to(model.device), targets[:, -width:].to(model.device)
    real = targets != 0
    table = model.item_table()  # built once per batch (a content-fused table is a matrix product)
    hidden = model.encode(inputs, table)[real]
    # `model.item_logits` fused with the cross-entropy (rows 1.. of the table are the real items).
    summed = full_softmax_cross_entropy(hidden, table[1:], targets[real] - 1, logit_offset, logit_buffer)
    return summed / positions_per_batch, int(real.sum())


def _train_epoch(
    model: SASRec,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    config: SASRecConfig,
    generator: torch.Generator,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    logit_offset: torch.Tensor | None = None,
) -> float:
    """One pass over the shuffled training sequences; returns the mean loss per predicted position."""
    model.train()
    lengths = (targets != 0).sum(dim=1)
    batches = epoch_batches(lengths, config, generator)
    positions_per_batch = float(lengths.sum()) / len(batches)
    total_loss, total_positions = 0.0, 0
    logit_buffer = LogitBuffer()
    for rows in batches:
        divisor = positions_per_batch if config.loss_weighting == "position" else float(lengths[rows].sum())
        loss, positions = batch_loss(model, inputs[rows], targets[rows], divisor, logit_offset, logit_buffer)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += float(loss.detach()) * divisor
        total_positions += positions
    return total_loss / max(total_positions, 1)


def train_sasrec(
    data: SequenceData, config: SASRecConfig | None = None, on_epoch: EpochCallback | None = None,
    resume: ResumePolicy | None = None,
) -> SASRecResult:
    """Train on the training split, select the epoch with the best validation NDCG@10, return that model."""
    config = config or SASRecConfig()
    torch.manual_seed(config.seed)
    return train_sequence_model(SASRec(data.n_items, config), data, config, on_epoch, name="SASRec", resume=resume)


def train_sequence_model(
    model: SASRec, data: SequenceData, config: SASRecConfig, on_epoch: EpochCallback | None = None,
    name: str = "SASRec", resume: ResumePolicy | None = None, frozen_inputs: dict[str, str] | None = None,
) -> SASRecResult:
    """The SASRec training loop for any model with SASRec's interface (its item table may come from content).

    The caller seeds torch before building `model`, so initialisation is reproducible; batches have
    their own generator from `config.seed`. With `resume`, the whole training state is saved at epoch
    ends on its timer and a matching saved state is continued (`ml/train/resume.py`); `frozen_inputs` names the
    digests of the model's other frozen inputs (its content vectors), which must match too.
    """
    device = torch.device(resolve_device(config.device))
    generator = torch.Generator().manual_seed(config.seed)
    inputs, targets = training_pairs(data.train, config.max_len)
    if len(inputs) == 0:
        raise ValueError("no user has two or more training items: nothing to train on")
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Steps per epoch depend on the lengths when batches hold positions: count one epoch's cut.
    steps_per_epoch = len(epoch_batches((targets != 0).sum(dim=1), config, torch.Generator().manual_seed(config.seed)))
    budget = epoch_budget(steps_per_epoch, config.max_epochs, config.eval_every, config.max_steps,
                          config.eval_every_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(
        config.lr_schedule, config.warmup_steps, steps_per_epoch * budget.max_epochs))
    valid_histories, valid_targets = data.history("valid")
    logger.info(
        "%s on %s: %d items, %d training sequences, %d positions, %d steps per epoch, up to %d epochs "
        "(validation every %d), device %s", name, data.dataset, data.n_items, len(inputs),
        int((targets != 0).sum()), steps_per_epoch, budget.max_epochs, budget.eval_every, device,
    )

    logit_offset = None
    if config.train_logit_adjustment > 0:
        popularity = log_popularity(item_train_counts(data.train, data.n_items))[1:]
        logit_offset = (config.train_logit_adjustment * popularity).to(device)

    def train_epoch() -> dict[str, float]:
        loss = _train_epoch(model, optimizer, inputs, targets, config, generator, scheduler, logit_offset)
        return {"loss": loss, "lr": scheduler.get_last_lr()[0]}

    def validate() -> dict[str, float]:
        return evaluate_model(model.score, valid_histories, valid_targets, config.eval_batch_size, DEFAULT_KS).metrics

    partial = None if resume is None else PartialTraining(
        resume, training_identity(config, data, **(frozen_inputs or {})),
        {"optimizer": optimizer, "scheduler": scheduler, "batches": TorchGeneratorState(generator)})
    outcome = fit_with_early_stopping(model, train_epoch, validate, budget.max_epochs, config.patience,
                                      budget.eval_every, on_epoch, name=name, partial=partial)
    best_valid, extra = outcome.best_valid, {}
    if config.popularity_adjustment == "balanced":
        choice = choose_popularity_adjustment(model, data, config.popularity_betas, config.eval_batch_size)
        # The served model is the adjusted one: its validation metrics are what model selection compares.
        best_valid = choice.valid
        extra = {"popularity_beta": choice.beta, "valid_unadjusted": outcome.best_valid,
                 "balanced_valid_ndcg@10": {f"{beta:g}": round(value, 6) for beta, value in choice.balanced.items()}}
        logger.info("%s: popularity adjustment beta %g (balanced validation NDCG@10 %.5f; validation NDCG@10 "
                    "%.5f, raw scores %.5f)", name, choice.beta, choice.balanced[choice.beta],
                    choice.valid["ndcg@10"], outcome.best_valid["ndcg@10"])
    return SASRecResult(model=model, config=config, best_epoch=outcome.best_epoch, best_valid=best_valid,
                        history=outcome.history, extra=extra)
