"""Train ED2: quantisers pre-trained, then the LM and (dynamic index) the quantisers jointly, codes re-assigned.

1. Both quantisers (`pretrain_quantizers`, the authors' step 1, pre-training the RQ-VAE): minibatch
   autoencoder warm-up, k-means codebooks on the latents, RQ-VAE training, the first code tables.
2. The recommender: every training position after a user's first item is a next-item example
   (`next_item_form: prompts`), or one prompt per window of `max_len` + 1 items scores every
   position in it (`sequences`: one causal pass for up to `max_len` targets); `user_task_ratio` x
   as many user-prediction examples are drawn afresh each epoch. Batches are
   bucketed by prompt length (`bucketed_batches`), AdamW with a linear warm-up.
3. Dynamic index: every `reassign_every` epochs (or, when set, every `reassign_every_steps` steps,
   for budgets shorter than an epoch), dead codewords are restarted and both code tables re-assigned
   from the current quantisers (collisions resolved); the counts of changed codes, collisions and
   restarts go to the epoch record. Static index: the quantisers are frozen after
   step 1 and the tables never change.

Validation runs the full inference path (constrained beam search over the current item indices)
through the shared evaluator; early stopping keeps the epoch with the best validation NDCG@10, and
its code tables with it (they are buffers in the state dict), so the checkpoint stores exactly the
tables its metrics were measured with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ml.data.ed2_instructions import item_users, next_item_examples, sample_user_predictions, sequence_examples
from ml.data.sequences import SequenceData
from ml.encoders.device import resolve_device
from ml.evaluate.ranking import DEFAULT_KS, evaluate_model
from ml.models.ed2 import ED2
from ml.models.ed2_backbone import ED2Vocabulary, EntityKind, build_lm, tiny_lm_config, tiny_vocabulary
from ml.models.ed2_config import ED2Config
from ml.models.residual_quantizer import CodeTable, assign_codes
from ml.train.early_stopping import EpochCallback, epoch_budget, fit_with_early_stopping, step_budget
from ml.train.ed2_loss import ED2Example, ed2_losses, next_item_example, user_example
from ml.train.results import TrainingResult
from ml.train.resume import (
    Counters,
    NumpyGeneratorState,
    PartialTraining,
    ResumePolicy,
    TorchGeneratorState,
    array_digest,
    training_identity,
)
from ml.train.sasrec_training import batches_per_epoch, bucketed_batches
from ml.train.schedules import lr_multiplier

logger = logging.getLogger(__name__)

KINDS: tuple[EntityKind, ...] = ("item", "user")
RESTART_EVERY = 50  # pre-training steps between dead-code restarts
PRETRAIN_BATCH = 2048  # entities per quantiser pre-training step
# (config) -> (LM, vocabulary, LM config dict): how the backbone is made (`tiny_backbone`, or SmolLM2's loader).
BackboneFactory = Callable[[ED2Config], tuple[torch.nn.Module, ED2Vocabulary, dict[str, Any]]]


@dataclass
class ED2Result(TrainingResult[ED2, ED2Config]):
    """A trained ED2 (eval mode, best validation weights and code tables) and how training went."""


def tiny_backbone(config: ED2Config) -> tuple[torch.nn.Module, ED2Vocabulary, dict[str, Any]]:
    """The randomly initialised tiny Llama over the template words and the index tokens."""
    vocabulary = tiny_vocabulary(config.levels, config.codebook_size)
    lm_config = tiny_lm_config(config, vocabulary.size)
    return build_lm(lm_config, config), vocabulary, lm_config


def table_stats(kind: str, table: CodeTable, previous: CodeTable | None = None) -> dict[str, float]:
    """Collisions, largest shared code and (against `previous`) changed codes of one table, for the log."""
    stats = {f"{kind}_collided": float(table.collided), f"{kind}_largest_group": float(table.largest_group),
             f"{kind}_moved": float(table.moved)}
    if previous is not None:
        stats[f"{kind}_codes_changed"] = float(table.changed_from(previous))
    return stats


def _minibatch(vectors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A seeded random minibatch of `PRETRAIN_BATCH` rows (all rows when there are fewer)."""
    if len(vectors) <= PRETRAIN_BATCH:
        return vectors
    return vectors[torch.randperm(len(vectors), generator=generator)[:PRETRAIN_BATCH].to(vectors.device)]


def pretrain_quantizers(model: ED2, config: ED2Config) -> dict[str, float]:
    """Step 1 for both kinds: autoencoder warm-up, k-means codebooks, RQ-VAE training, the first code tables.

    Steps read seeded minibatches of `PRETRAIN_BATCH` entities (the whole set when smaller). The first
    half of `quantizer_pretrain_steps` trains encoder and decoder without quantisation: the latent's
    scale moves most in the first steps, and codebooks fit before that would be left behind (measured
    on movielens: every entity in a handful of codes after 10 steps). The codebooks are then
    initialised by k-means on the settled latents of every entity, and the second half trains the
    whole RQ-VAE (reconstruction + codebook + commitment), restarting dead codewords every 50 steps
    and at the end.
    """
    stats: dict[str, float] = {}
    warmup = config.quantizer_pretrain_steps // 2
    generator = torch.Generator().manual_seed(config.seed)
    for kind in KINDS:
        quantizer, vectors = model.quantizer(kind), model.semantic(kind)
        optimizer = torch.optim.Adam(quantizer.parameters(), lr=config.quantizer_lr)

        for _ in range(warmup):
            batch = _minibatch(vectors, generator)
            loss = torch.nn.functional.mse_loss(quantizer.decoder(quantizer.encoder(batch)), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        quantizer.init_codebooks(vectors, config.seed)
        restarts = 0
        for step in range(config.quantizer_pretrain_steps - warmup):
            batch = _minibatch(vectors, generator)
            codes = torch.from_numpy(quantizer.quantize(batch)[0]).to(vectors.device)
            output = quantizer(batch, codes)
            loss = quantizer.own_loss(batch, output) + output.codebook()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % RESTART_EVERY == 0:
                restarts += quantizer.restart_dead_codes(vectors)
        restarts += quantizer.restart_dead_codes(vectors)
        table = assign_codes(quantizer, vectors)
        model.set_codes(kind, table)
        stats.update({**table_stats(kind, table), f"{kind}_pretrain_restarts": float(restarts)})
        logger.info("ED2 %s quantiser: %d entities, %d moved to a free last code, %d suffixed (largest group %d), "
                    "%d dead codes restarted", kind, len(table.codes), table.moved, table.collided,
                    table.largest_group, restarts)
    return stats


def reassign(model: ED2) -> dict[str, float]:
    """Restart dead codewords and re-assign both code tables from the current quantisers."""
    stats: dict[str, float] = {}
    for kind in KINDS:
        quantizer, vectors = model.quantizer(kind), model.semantic(kind)
        previous = model.code_table(kind)
        restarted = quantizer.restart_dead_codes(vectors)
        table = assign_codes(quantizer, vectors)
        model.set_codes(kind, table)
        stats.update({**table_stats(kind, table, previous), f"{kind}_codes_restarted": float(restarted)})
    return stats


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Torch's deterministic kernels for the block, then the previous setting.

    ED2's index-token look-ups backpropagate through accumulating index writes, which on two CPU threads
    add up in a varying order: without this, two identical runs gave different weights.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def train_ed2(
    data: SequenceData, item_semantic: np.ndarray, user_semantic: np.ndarray, config: ED2Config | None = None,
    on_epoch: EpochCallback | None = None, backbone: BackboneFactory = tiny_backbone,
    resume: ResumePolicy | None = None,
) -> ED2Result:
    """Train on the training split; keep the epoch (weights and code tables) with the best validation NDCG@10.

    With `resume`, the whole training state (the code tables included: they are buffers) is saved at
    epoch ends on its timer and a matching saved state is continued (`ml/train/resume.py`).
    """
    with deterministic_algorithms():
        return _train_ed2(data, item_semantic, user_semantic, config or ED2Config(), on_epoch, backbone, resume)


def _train_ed2(
    data: SequenceData, item_semantic: np.ndarray, user_semantic: np.ndarray, config: ED2Config,
    on_epoch: EpochCallback | None, backbone: BackboneFactory, resume: ResumePolicy | None,
) -> ED2Result:
    """`train_ed2`'s body, under deterministic kernels."""
    if len(item_semantic) != data.n_items or len(user_semantic) != data.n_users:
        raise ValueError(f"semantic vectors for {len(item_semantic)} items and {len(user_semantic)} users; the split "
                         f"has {data.n_items} and {data.n_users}")
    torch.manual_seed(config.seed)
    device = torch.device(resolve_device(config.device))
    lm, vocabulary, lm_config = backbone(config)
    model = ED2(item_semantic, user_semantic, config, lm, vocabulary, lm_config).to(device)
    index_stats = pretrain_quantizers(model, config)
    if config.index == "static":
        for kind in KINDS:
            model.quantizer(kind).requires_grad_(False)
    in_sequences = config.next_item_form == "sequences"
    examples = sequence_examples(data.train, config.max_len) if in_sequences else next_item_examples(data.train)
    if len(examples) == 0:
        raise ValueError("no user has two or more training items: nothing to train on")
    # Sequence form: the mean targets per example (every position >= 1 is one), so a target weighs what a prompt does.
    targets_per_example = len(next_item_examples(data.train)) / len(examples) if in_sequences else 1.0
    item_sets = item_users(data.train, data.n_items)
    user_examples_per_epoch = int(round(config.user_task_ratio * len(examples)))
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    # The quantisers keep their pre-training learning rate: their codewords are part of every index token's
    # vector, and moving them at the LM's rate makes the LM chase its own input embeddings.
    quantizer_ids = {id(parameter) for kind in KINDS for parameter in model.quantizer(kind).parameters()}
    groups = [
        {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in quantizer_ids]},
        {"params": [p for p in model.parameters() if p.requires_grad and id(p) in quantizer_ids],
         "lr": config.quantizer_lr if config.index_lr is None else config.index_lr},
    ]
    optimizer = torch.optim.AdamW([group for group in groups if group["params"]], lr=config.lr,
                                  weight_decay=config.weight_decay)
    n_rows = len(examples) + user_examples_per_epoch
    steps_per_epoch = batches_per_epoch(n_rows, config.batch_size, config.bucket_batches)
    budget = epoch_budget(steps_per_epoch, config.max_epochs, config.eval_every, config.max_steps,
                          config.eval_every_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(
        config.lr_schedule, config.warmup_steps, step_budget(steps_per_epoch, budget.max_epochs, config.max_steps)))
    valid_histories, valid_targets = data.history("valid")
    valid_users = np.arange(data.n_users)
    history_lengths = np.minimum(examples.positions, config.max_len)
    logger.info("ED2 on %s: %d items, %d users, %d next-item and %d user-task examples per epoch, %d steps per "
                "epoch, up to %d epochs (validation every %d), %s index, %s backbone, device %s", data.dataset,
                data.n_items, data.n_users, len(examples), user_examples_per_epoch, steps_per_epoch,
                budget.max_epochs, budget.eval_every, config.index, config.backbone, device)

    counters = Counters(steps_taken=0, epochs_run=0, reassignments=0)
    quantizer_group = len(optimizer.param_groups) - 1  # the quantisers' group is last (absent when static)

    def index_frozen() -> bool:
        return config.index == "static" or (config.max_reassignments is not None
                                            and counters["reassignments"] >= config.max_reassignments)

    def freeze_index() -> None:
        # Learning rate 0 for good (the scheduler scales its base rate): Adam's momentum cannot move the codewords.
        scheduler.base_lrs[quantizer_group] = 0.0
        optimizer.param_groups[quantizer_group]["lr"] = 0.0

    def train_epoch() -> dict[str, float]:
        record: dict[str, float] = {}

        def reassign_into_record() -> None:
            stats = reassign(model)
            for key, value in stats.items():  # counts of changes add up over the epoch; the table's state is the last
                record[key] = record.get(key, 0.0) + value if key.endswith(("changed", "restarted")) else value
            record["reassignments"] = record.get("reassignments", 0.0) + 1
            counters["reassignments"] += 1
            if index_frozen():
                freeze_index()
                logger.info("ED2 index frozen after %d re-assignments", counters["reassignments"])

        if not index_frozen() and config.reassign_every_steps is None and counters["epochs_run"] > 0 \
                and counters["epochs_run"] % config.reassign_every == 0:
            reassign_into_record()
        counters["epochs_run"] += 1
        model.train()
        user_tasks = sample_user_predictions(item_sets, user_examples_per_epoch, config.user_context, rng)
        # Bucket by prompt length: a next-item prompt grows with its history, a user-task one with its context.
        lengths = torch.as_tensor(np.concatenate([history_lengths, [len(task.context) for task in user_tasks]]))
        sums: dict[str, float] = {}
        steps = 0
        for batch in bucketed_batches(lengths, config.batch_size, generator, config.bucket_batches):
            steps_taken = counters["steps_taken"]
            if config.max_steps is not None and steps_taken >= config.max_steps:
                break
            if not index_frozen() and config.reassign_every_steps is not None and steps_taken > 0 \
                    and steps_taken % config.reassign_every_steps == 0:
                reassign_into_record()
            batch_examples: list[ED2Example] = []
            for row in batch.tolist():
                if row < len(examples):
                    batch_examples.append(next_item_example(model, data.train, int(examples.users[row]),
                                                            int(examples.positions[row]), inner=in_sequences))
                else:
                    batch_examples.append(user_example(model, user_tasks[row - len(examples)]))
            losses = ed2_losses(model, batch_examples, config.batch_size, targets_per_example,
                                index_frozen=index_frozen())
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            optimizer.step()
            scheduler.step()
            steps += 1
            counters["steps_taken"] += 1
            for name, value in {"loss": float(losses.total.detach()), **losses.terms}.items():
                sums[name] = sums.get(name, 0.0) + value
        record.update({name: value / max(1, steps) for name, value in sums.items()})
        record["lr"] = scheduler.get_last_lr()[0]
        record["index_frozen"] = float(index_frozen())
        if config.index == "dynamic":
            record["index_lr"] = optimizer.param_groups[quantizer_group]["lr"]
        record["steps"] = float(steps)
        return record

    def validate() -> dict[str, float]:
        return evaluate_model(model.score, valid_histories, valid_targets, config.eval_batch_size, DEFAULT_KS,
                              user_rows=valid_users).metrics

    partial = None if resume is None else PartialTraining(
        resume, training_identity(config, data, item_semantic=array_digest(item_semantic),
                                  user_semantic=array_digest(user_semantic)),
        {"optimizer": optimizer, "scheduler": scheduler, "batches": TorchGeneratorState(generator),
         "user_tasks": NumpyGeneratorState(rng), "counters": counters})
    outcome = fit_with_early_stopping(model, train_epoch, validate, budget.max_epochs, config.patience,
                                      budget.eval_every, on_epoch, name="ED2", partial=partial)
    final = {f"final_{key}": value for kind in KINDS
             for key, value in table_stats(kind, model.code_table(kind)).items() if key.endswith("collided")}
    return ED2Result(model=model, config=config, best_epoch=outcome.best_epoch, best_valid=outcome.best_valid,
                     history=outcome.history, extra={**{f"initial_{k}": v for k, v in index_stats.items()}, **final})
