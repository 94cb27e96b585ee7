"""Train LEARN's PAL with the dense all-action loss and early stopping on validation NDCG@10.

Every epoch, each user's training sequence (of at least two items) becomes one example: split into
history and target, and sampled when the config says so (`ml.train.learn_loss`). Examples are batched
by similar history + target length (`bucketed_batches`, as for SASRec), so a batch is only as wide as
its longest part. The optimizer is AdamW (no weight decay on biases, LayerNorm weights and the
temperature, as in BERT) under a cosine schedule with optional linear warmup, stepped per batch over
max_epochs. Validation uses the shared full-ranking evaluator (history = training items, target =
validation item) with items embedded one by one, as at inference; the test split is never looked at
here. Runs are deterministic on CPU for a given seed: torch.manual_seed for weights and dropout, a
torch generator for batch order and a numpy generator for splits and sampling.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from ml.data.sequences import SequenceData
from ml.encoders.device import resolve_device
from ml.evaluate.ranking import DEFAULT_KS, evaluate_model
from ml.models.learn import LEARN, LEARNConfig, right_pad
from ml.train.early_stopping import EpochCallback, epoch_budget, fit_with_early_stopping
from ml.train.learn_loss import LEARNExample, dense_all_action_loss, make_example
from ml.train.results import TrainingResult
from ml.train.sasrec_training import batches_per_epoch, bucketed_batches
from ml.train.schedules import cosine_schedule

logger = logging.getLogger(__name__)


@dataclass
class LEARNResult(TrainingResult[LEARN, LEARNConfig]):
    """A trained LEARN (eval mode, best validation weights) and how training went."""

    @torch.no_grad()
    def item_embeddings(self) -> np.ndarray:
        """(n_items, output_dim) float32 inference item embeddings, each item embedded alone; row i = index i + 1."""
        self.model.eval()
        return self.model.catalogue_matrix().cpu().numpy().astype(np.float32)


@dataclass(frozen=True)
class LEARNBatch:
    """Padded tower inputs of a batch and the positions (with masks) of each that enter the loss."""

    history: torch.Tensor  # (B, H) right-padded item indices
    target: torch.Tensor  # (B, T)
    history_positions: torch.Tensor  # (B, N_h) indices into history, 0 where masked out
    history_mask: torch.Tensor  # (B, N_h) bool
    target_positions: torch.Tensor  # (B, N_t)
    target_mask: torch.Tensor  # (B, N_t) bool

    def to(self, device: torch.device) -> LEARNBatch:
        """The same batch on `device`."""
        return LEARNBatch(*(getattr(self, item.name).to(device) for item in fields(self)))


def _pad_positions(positions: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(rows) for rows in positions)
    padded = np.zeros((len(positions), width), dtype=np.int64)
    mask = np.zeros((len(positions), width), dtype=bool)
    for row, values in enumerate(positions):
        padded[row, : len(values)] = values
        mask[row, : len(values)] = True
    return torch.from_numpy(padded), torch.from_numpy(mask)


def collate(examples: Sequence[LEARNExample], max_len: int) -> LEARNBatch:
    """Right-pad the histories and targets of `examples` and their loss positions into one batch."""
    history_positions, history_mask = _pad_positions([example.history_positions for example in examples])
    target_positions, target_mask = _pad_positions([example.target_positions for example in examples])
    return LEARNBatch(
        history=right_pad([example.history for example in examples], max_len),
        target=right_pad([example.target for example in examples], max_len),
        history_positions=history_positions,
        history_mask=history_mask,
        target_positions=target_positions,
        target_mask=target_mask,
    )


def item_log_frequency(sequences: Sequence[np.ndarray], n_items: int) -> torch.Tensor:
    """(n_items + 1,) log of each item's share of all training interactions (add-one smoothed; index 0 unused)."""
    counts = np.bincount(np.concatenate(list(sequences)), minlength=n_items + 1).astype(np.float64) + 1.0
    counts[0] = 1.0
    return torch.from_numpy(np.log(counts / counts[1:].sum())).float()


def batch_loss(model: LEARN, batch: LEARNBatch, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Dense all-action loss of one batch: user states at the history positions, item states at the target ones.

    `log_q` (n_items + 1,) turns on the logQ correction (`item_log_frequency`).
    """
    def gather(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return states.gather(1, positions.unsqueeze(-1).expand(-1, -1, states.shape[-1]))

    user_emb = gather(model.user_states(batch.history), batch.history_positions)
    item_emb = gather(model.item_states(batch.target), batch.target_positions)
    target_ids = batch.target.gather(1, batch.target_positions)
    target_log_q = None if log_q is None else log_q[target_ids]
    return dense_all_action_loss(user_emb, batch.history_mask, item_emb, batch.target_mask, target_ids,
                                 model.temperature, target_log_q)


def _optimizer(model: LEARN, config: LEARNConfig) -> torch.optim.AdamW:
    # BERT's recipe: decay matrices only; biases, LayerNorm weights (1-d) and the temperature (0-d) are exempt.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def _train_epoch(
    model: LEARN,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    sequences: Sequence[np.ndarray],
    config: LEARNConfig,
    rng: np.random.Generator,
    generator: torch.Generator,
    log_q: torch.Tensor | None,
) -> float:
    """One pass over fresh examples of every sequence; returns the mean loss per batch."""
    model.train()
    examples = [make_example(seq, rng, config) for seq in sequences]
    lengths = torch.tensor([len(example.history) + len(example.target) for example in examples])
    total_loss, n_batches = 0.0, 0
    for rows in bucketed_batches(lengths, config.batch_size, generator):
        batch = collate([examples[row] for row in rows.tolist()], config.max_len).to(model.device)
        loss = batch_loss(model, batch, log_q)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += float(loss.detach())
        n_batches += 1
    return total_loss / max(n_batches, 1)


def train_learn(
    data: SequenceData, content: np.ndarray, config: LEARNConfig, on_epoch: EpochCallback | None = None
) -> LEARNResult:
    """Train PAL over frozen `content` (n_items, content_dim; row i = data.item_ids[i]); keep the best valid epoch."""
    content = np.asarray(content, dtype=np.float32)
    if content.ndim != 2 or content.shape[0] != data.n_items:
        raise ValueError(f"content must be ({data.n_items}, content_dim) aligned with data.item_ids, "
                         f"got {content.shape}")
    if not np.isfinite(content).all():
        raise ValueError("content embeddings contain NaN or inf")
    if config.content_dim is None:
        config = replace(config, content_dim=content.shape[1])
    device = torch.device(resolve_device(config.device))
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sequences = [seq for seq in data.train if len(seq) >= 2]
    if not sequences:
        raise ValueError("no user has two or more training items: nothing to train on")
    model = LEARN(content, config).to(device)
    log_q = item_log_frequency(sequences, data.n_items).to(device) if config.logq_correction else None
    optimizer = _optimizer(model, config)
    steps_per_epoch = batches_per_epoch(len(sequences), config.batch_size)
    budget = epoch_budget(steps_per_epoch, config.max_epochs, 1, config.max_steps, config.eval_every_steps)
    total_steps = steps_per_epoch * budget.max_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(total_steps, config.warmup_steps))
    valid_histories, valid_targets = data.history("valid")
    logger.info(
        "LEARN on %s: %d items (content dim %d), %d training sequences, item tower %s, sampling %s, device %s",
        data.dataset, data.n_items, content.shape[1], len(sequences), config.item_tower, config.sampling, device,
    )

    def train_epoch() -> dict[str, float]:
        loss = _train_epoch(model, optimizer, scheduler, sequences, config, rng, generator, log_q)
        return {"loss": loss, "temperature": float(model.temperature.detach()), "lr": scheduler.get_last_lr()[0]}

    def validate() -> dict[str, float]:
        with model.cached_items():
            return evaluate_model(model.score, valid_histories, valid_targets, config.eval_batch_size,
                                  DEFAULT_KS).metrics

    outcome = fit_with_early_stopping(model, train_epoch, validate, budget.max_epochs, config.patience,
                                      budget.eval_every, on_epoch=on_epoch, name="LEARN")
    return LEARNResult(model=model, config=config, best_epoch=outcome.best_epoch, best_valid=outcome.best_valid,
                       history=outcome.history)
