"""Training that survives being stopped: a run killed after an epoch and resumed ends bit for bit as one never stopped."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.models.eager import EAGERConfig
from ml.models.sasrec import SASRecConfig
from ml.train.eager_training import train_eager
from ml.train.resume import (
    Counters,
    NumpyGeneratorState,
    PartialTraining,
    ResumeMismatch,
    ResumePolicy,
    differing_fields,
)
from ml.train.sasrec_training import train_sasrec
from tests.unit.test_eager import TINY as EAGER_TINY
from tests.unit.test_eager import _cycle_data, _streams

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(RuntimeError):
    """Stands for the process being killed at an epoch's end."""


def _kill_after(epoch: int) -> Callable[[int, dict], None]:
    def on_epoch(done: int, record: dict) -> None:
        if done == epoch:
            raise Killed(f"killed after epoch {done}")
    return on_epoch


def _assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


@pytest.mark.parametrize("kill_after", [1, 3])
def test_eager_resumed_after_a_kill_equals_the_uninterrupted_run(tmp_path: Path, kill_after: int) -> None:
    # Dropout and STT's random masks both draw random numbers: the saved RNG states must carry over.
    config = EAGERConfig(**{**EAGER_TINY, "max_epochs": 5, "eval_every": 2, "dropout": 0.1})
    data = _cycle_data()
    torch.manual_seed(123)
    uninterrupted = train_eager(data, _streams(), config)

    policy = ResumePolicy(tmp_path / "eager.partial.pt", every_minutes=0)
    torch.manual_seed(123)
    with pytest.raises(Killed):
        train_eager(data, _streams(), config, on_epoch=_kill_after(kill_after), resume=policy)
    assert policy.path.is_file()
    torch.manual_seed(999)  # the resumed process starts from another global RNG state: the saved one must win
    resumed = train_eager(data, _streams(), config, resume=policy)
    _assert_same_weights(uninterrupted.model, resumed.model)
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert [record["loss"] for record in resumed.history] == [record["loss"] for record in uninterrupted.history]
    assert not policy.path.exists()  # removed once training ended


def test_sasrec_resumed_after_a_kill_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    config = SASRecConfig(hidden_dim=16, n_layers=1, n_heads=1, max_len=8, max_epochs=4, eval_every=1,
                          patience=10, max_steps=None, eval_every_steps=None, batch_size=16, device="cpu")
    data = _cycle_data()
    uninterrupted = train_sasrec(data, config)
    policy = ResumePolicy(tmp_path / "sasrec.partial.pt", every_minutes=0)
    with pytest.raises(Killed):
        train_sasrec(data, config, on_epoch=_kill_after(2), resume=policy)
    resumed = train_sasrec(data, config, resume=policy)
    _assert_same_weights(uninterrupted.model, resumed.model)
    assert [record["loss"] for record in resumed.history] == [record["loss"] for record in uninterrupted.history]


def test_a_state_from_another_config_is_refused_naming_the_field(tmp_path: Path) -> None:
    config = EAGERConfig(**{**EAGER_TINY, "max_epochs": 3, "eval_every": 1})
    policy = ResumePolicy(tmp_path / "eager.partial.pt", every_minutes=0)
    with pytest.raises(Killed):
        train_eager(_cycle_data(), _streams(), config, on_epoch=_kill_after(1), resume=policy)
    changed = EAGERConfig(**{**EAGER_TINY, "max_epochs": 3, "eval_every": 1, "lr": 5e-3})
    with pytest.raises(ResumeMismatch, match=r"config\.lr: saved 0\.01, now 0\.005"):
        train_eager(_cycle_data(), _streams(), changed, resume=policy)
    # resume off: the saved state is ignored, training starts over (and replaces it as it goes).
    fresh = train_eager(_cycle_data(), _streams(), changed, resume=ResumePolicy(policy.path, 0, resume=False))
    assert len(fresh.history) == 3


def test_saves_follow_the_timer_and_restore_every_part(tmp_path: Path) -> None:
    now = [0.0]
    rng = np.random.default_rng(0)
    counters = Counters(steps=3)
    model = torch.nn.Linear(2, 2)
    partial = PartialTraining(ResumePolicy(tmp_path / "p.pt", every_minutes=1), {"lr": 0.1},
                              {"rng": NumpyGeneratorState(rng), "counters": counters}, clock=lambda: now[0])
    assert not partial.maybe_save(model, {"epoch": 1})
    now[0] = 61.0
    assert partial.maybe_save(model, {"epoch": 2}) and not partial.maybe_save(model, {"epoch": 3})
    expected = rng.random()
    counters["steps"] = 9
    restored = PartialTraining(partial.policy, {"lr": 0.1}, {"rng": NumpyGeneratorState(rng), "counters": counters})
    assert restored.restore(model) == {"epoch": 2} and restored.resumed_from == 2
    assert rng.random() == expected and counters["steps"] == 3
    assert differing_fields({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == ["b", "c"]


def test_ed2_resumed_after_a_kill_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    """ED2 re-assigns its codes between epochs and samples user tasks: both carry over in the saved state."""
    from ml.models.ed2_config import ED2Config
    from ml.train.ed2_training import train_ed2
    from tests.unit.test_ed2 import TINY as ED2_TINY
    from tests.unit.test_ed2 import _cycle_data as ed2_data
    from tests.unit.test_ed2 import _semantics

    config = ED2Config(**{**ED2_TINY, "max_epochs": 4, "eval_every": 2, "patience": 10})
    uninterrupted = train_ed2(ed2_data(), *_semantics(), config)
    policy = ResumePolicy(tmp_path / "ed2.partial.pt", every_minutes=0)
    with pytest.raises(Killed):
        train_ed2(ed2_data(), *_semantics(), config, on_epoch=_kill_after(3), resume=policy)
    resumed = train_ed2(ed2_data(), *_semantics(), config, resume=policy)
    _assert_same_weights(uninterrupted.model, resumed.model)
    assert [record["loss"] for record in resumed.history] == [record["loss"] for record in uninterrupted.history]


def test_other_content_vectors_are_refused(tmp_path: Path) -> None:
    """Content-SASRec's content is part of its weights: a state saved over other vectors must not be resumed."""
    from ml.models.content_sasrec import ContentSASRecConfig
    from ml.train.content_sasrec_training import train_content_sasrec

    data = _cycle_data()
    config = ContentSASRecConfig(hidden_dim=16, n_layers=1, n_heads=1, max_len=8, max_epochs=3, eval_every=1,
                                 patience=10, max_steps=None, eval_every_steps=None, batch_size=16, device="cpu",
                                 popularity_adjustment="none")
    content = np.random.default_rng(0).normal(size=(data.n_items, 8)).astype(np.float32)
    policy = ResumePolicy(tmp_path / "content.partial.pt", every_minutes=0)
    with pytest.raises(Killed):
        train_content_sasrec(data, content, config, on_epoch=_kill_after(1), resume=policy)
    with pytest.raises(ResumeMismatch, match=r"input\.content"):
        train_content_sasrec(data, content + 1.0, config, resume=policy)
    resumed = train_content_sasrec(data, content, config, resume=policy)
    assert len(resumed.history) == 3
