"""The shared epoch loop: best validation epoch kept (weights and metrics), patience, eval_every, callbacks."""

import torch
from torch import nn

from ml.train.early_stopping import EpochBudget, fit_with_early_stopping


def _run(scores: list[float], max_epochs: int, patience: int, eval_every: int = 1):
    model = nn.Linear(1, 1, bias=False)
    epochs = iter(range(1, 100))
    seen: list[int] = []

    def train_epoch() -> dict[str, float]:
        epoch = next(epochs)
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # the weight records which epoch produced it
        return {"loss": 1.0 / epoch}

    def validate() -> dict[str, float]:
        return {"ndcg@10": scores[int(model.weight.item()) - 1], "recall@10": 0.0}

    outcome = fit_with_early_stopping(model, train_epoch, validate, max_epochs, patience, eval_every,
                                      on_epoch=lambda epoch, record: seen.append(epoch))
    return model, outcome, seen


def test_keeps_the_best_epoch_and_stops_after_patience() -> None:
    model, outcome, seen = _run([0.1, 0.3, 0.2, 0.25, 0.29, 0.5], max_epochs=6, patience=3)
    assert outcome.best_epoch == 2 and outcome.best_valid["ndcg@10"] == 0.3
    assert seen == [1, 2, 3, 4, 5] and len(outcome.history) == 5  # stopped 3 epochs after the best
    assert model.weight.item() == 2.0 and not model.training  # the best weights, in eval mode
    assert outcome.history[1]["valid_ndcg@10"] == 0.3 and outcome.history[1]["loss"] == 0.5
    assert {"seconds", "eval_seconds", "epoch"} <= set(outcome.history[0])


def test_validates_every_n_epochs_and_after_the_last() -> None:
    _, outcome, _ = _run([0.1, 0.2, 0.3, 0.4, 0.5], max_epochs=5, patience=10, eval_every=2)
    assert [("valid_ndcg@10" in record) for record in outcome.history] == [False, True, False, True, True]
    assert outcome.best_epoch == 5


def test_a_tie_keeps_the_earlier_epoch() -> None:
    model, outcome, _ = _run([0.2, 0.2, 0.2], max_epochs=3, patience=5)
    assert outcome.best_epoch == 1 and model.weight.item() == 1.0


def test_patience_counts_validations_not_epochs() -> None:
    # Validation every 2 epochs: epochs 2, 4, 6, 8 score 0.2, 0.5, 0.4, 0.3; patience 2 -> stop at epoch 8.
    _, outcome, seen = _run([0.0, 0.2, 0.0, 0.5, 0.0, 0.4, 0.0, 0.3, 0.0, 0.9], max_epochs=10, patience=2,
                            eval_every=2)
    assert outcome.best_epoch == 4 and seen == [1, 2, 3, 4, 5, 6, 7, 8]


def test_epoch_budget_turns_steps_into_epochs_for_each_dataset_size() -> None:
    from ml.train.early_stopping import epoch_budget

    # A 22k-user dataset (88 steps per epoch) and a 943-user one (4 steps) under the same step budget.
    assert epoch_budget(88, max_epochs=1000, eval_every=2, max_steps=1800, eval_every_steps=176) == (
        EpochBudget(max_epochs=21, eval_every=2))
    assert epoch_budget(4, max_epochs=1000, eval_every=2, max_steps=1800, eval_every_steps=176) == (
        EpochBudget(max_epochs=450, eval_every=44))
    # Without step settings the epoch settings hold; max_epochs still caps a step budget.
    assert epoch_budget(4, max_epochs=20, eval_every=3) == EpochBudget(max_epochs=20, eval_every=3)
    assert epoch_budget(4, max_epochs=20, eval_every=3, max_steps=1800) == EpochBudget(max_epochs=20, eval_every=3)
    # Validation never less often than the whole run.
    assert epoch_budget(100, max_epochs=1000, eval_every=2, max_steps=150, eval_every_steps=1000) == (
        EpochBudget(max_epochs=2, eval_every=2))
