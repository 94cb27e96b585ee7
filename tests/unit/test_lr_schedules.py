"""Learning-rate schedules by name, and the configs that choose them (SASRec, EAGER, ED2)."""

import math

import pytest

from ml.models.eager import EAGERConfig
from ml.models.ed2_config import ED2Config
from ml.models.sasrec import SASRecConfig
from ml.train.early_stopping import step_budget
from ml.train.schedules import inverse_sqrt_schedule, lr_multiplier


def test_inverse_sqrt_warms_up_linearly_then_decays_as_one_over_root_step() -> None:
    schedule = inverse_sqrt_schedule(warmup_steps=4)
    assert [schedule(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(15) == pytest.approx(math.sqrt(4 / 16)) and schedule(399) == pytest.approx(0.1)
    # Monotone decay after the peak, never zero.
    values = [schedule(step) for step in range(3, 2000)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False)) and values[-1] > 0
    with pytest.raises(ValueError, match="warmup_steps >= 1"):
        inverse_sqrt_schedule(0)


def test_named_schedules() -> None:
    constant = lr_multiplier("constant", warmup_steps=2, total_steps=10)
    assert [constant(step) for step in (0, 1, 5, 500)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_multiplier("constant", 0, 10)(0) == 1.0
    cosine = lr_multiplier("cosine", warmup_steps=0, total_steps=10)
    assert cosine(0) == 1.0 and cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
    assert lr_multiplier("inverse_sqrt", 4, 10)(15) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        lr_multiplier("linear", 0, 10)


def test_the_step_budget_is_max_steps_or_whole_epochs() -> None:
    assert step_budget(steps_per_epoch=100, max_epochs=3) == 300
    assert step_budget(100, 3, max_steps=250) == 250
    assert step_budget(100, 3, max_steps=1000) == 300


@pytest.mark.parametrize("config", [SASRecConfig, EAGERConfig, ED2Config])
def test_configs_check_the_schedule(config: type) -> None:
    assert config(lr_schedule="inverse_sqrt", warmup_steps=10).lr_schedule == "inverse_sqrt"
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        config(lr_schedule="linear")
    with pytest.raises(ValueError, match="needs warmup_steps >= 1"):
        config(lr_schedule="inverse_sqrt", warmup_steps=0)
