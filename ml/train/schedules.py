"""Learning-rate schedules shared by the trainers (stepped once per batch)."""

from __future__ import annotations

import math
from collections.abc import Callable


def cosine_schedule(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """LR multiplier per step: linear warmup to 1 over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def warmup_constant_schedule(warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier per step: linear warmup to 1 over `warmup_steps`, then 1 (no decay)."""
    def multiplier(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0

    return multiplier


def inverse_sqrt_schedule(warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up to 1 over `warmup_steps`, then sqrt(warmup_steps / step)."""
    if warmup_steps < 1:
        raise ValueError("the inverse-square-root schedule needs warmup_steps >= 1 (it decays from there)")

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return math.sqrt(warmup_steps / (step + 1))

    return multiplier


def lr_multiplier(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The multiplier of a named schedule (`ml.models.sasrec.LRSchedule`); cosine reaches 0 at `total_steps`."""
    if schedule == "constant":
        return warmup_constant_schedule(warmup_steps)
    if schedule == "inverse_sqrt":
        return inverse_sqrt_schedule(warmup_steps)
    if schedule == "cosine":
        return cosine_schedule(total_steps, warmup_steps)
    raise ValueError(f"unknown lr_schedule {schedule!r}")
