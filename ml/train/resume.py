"""Training that survives being stopped: the whole state saved at epoch ends on a timer, resumed exactly.

A partial-training file holds what an uninterrupted run would carry into its next epoch: the weights,
the trainer's parts (optimiser, scheduler, batch generators, step counters), torch's global RNG (dropout),
and the early-stopping loop's own state (epoch, history, best weights and score, validations since the
best). Resuming from it continues at the next epoch and ends with the same weights, bit for bit on CPU,
as a run that was never stopped (`tests/unit/test_resume.py`).

It is saved at the first epoch end after `every_minutes` since the last save (0 = every epoch):
an epoch is the unit because a mid-epoch state would also need the epoch's batch order and partial
sums, and epochs here last seconds to a few minutes. It is written to a temporary file and renamed,
so a kill while saving leaves the previous state intact, and it is removed once training ends.

A partial file made under another training config (or another dataset) is refused, naming the
fields that differ, rather than silently mixing two runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ml.data.sequences import SequenceData

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ResumePolicy:
    """Where a run's partial state lives, how often it is saved, and whether a matching one is resumed."""

    path: Path
    every_minutes: float = 10.0
    resume: bool = True

    def __post_init__(self) -> None:
        if self.every_minutes < 0:
            raise ValueError("every_minutes must be >= 0")


class ResumeMismatch(ValueError):
    """A partial-training file belongs to a different training configuration or dataset."""


class Stateful(Protocol):
    """Anything whose state can be read and restored (optimisers and schedulers already are)."""

    def state_dict(self) -> dict[str, Any]:
        """The state to save."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved state."""
        ...


class TorchGeneratorState:
    """A torch.Generator as a Stateful part."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        """The generator's state."""
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator's state."""
        self.generator.set_state(state["state"])


class NumpyGeneratorState:
    """A numpy Generator as a Stateful part."""

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        """The bit generator's state."""
        return {"state": self.generator.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the bit generator's state."""
        self.generator.bit_generator.state = state["state"]


class Counters:
    """Named integer counters a training loop carries across epochs (e.g. optimizer steps taken)."""

    def __init__(self, **values: int) -> None:
        self.values = dict(values)

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def __setitem__(self, name: str, value: int) -> None:
        self.values[name] = value

    def state_dict(self) -> dict[str, Any]:
        """The counters."""
        return dict(self.values)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters."""
        self.values = dict(state)


def array_digest(*arrays: np.ndarray) -> str:
    """A short sha256 of arrays' shapes and values (what a model's frozen inputs were)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}|".encode() + array.tobytes())
    return digest.hexdigest()[:16]


def training_identity(config: Any, data: SequenceData, **inputs: str) -> dict[str, Any]:
    """What a partial state must match to be resumed: every field of the training config, the data, and the
    digests of any other frozen inputs (content vectors, code tables) by name."""
    identity = {f"config.{name}": value for name, value in asdict(config).items() if name != "device"}
    train = array_digest(*(np.asarray(sequence, dtype=np.int64) for sequence in data.train))
    return {**identity, "data.dataset": data.dataset, "data.n_items": data.n_items,
            "data.users": data.user_ids_digest(), "data.train": train,
            **{f"input.{name}": value for name, value in inputs.items()}}


def differing_fields(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Names of the fields whose values differ between two flat configs (a field in one only counts)."""
    return sorted(name for name in set(saved) | set(current) if saved.get(name) != current.get(name))


class PartialTraining:
    """One training run's partial state: restored before the first epoch, saved at epoch ends, removed at the end.

    `identity` is what must match to resume (the training config and the data it trains on, as plain
    values); `parts` are the trainer's stateful pieces, by name.
    """

    def __init__(self, policy: ResumePolicy, identity: Mapping[str, Any], parts: Mapping[str, Stateful],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.identity = {name: _plain(value) for name, value in identity.items()}
        self.parts = dict(parts)
        self.clock = clock
        self.last_saved = clock()
        self.resumed_from: int | None = None

    def restore(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """Load a matching partial state into the model and parts; the loop's saved state, or None to start fresh."""
        path = self.policy.path
        if not path.is_file():
            return None
        if not self.policy.resume:
            logger.info("resume off: ignoring the partial training state at %s", path)
            return None
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("format") != FORMAT_VERSION:
            raise ResumeMismatch(f"{path} has format {saved.get('format')!r}, expected {FORMAT_VERSION}; delete it "
                                 "to start over")
        differ = differing_fields(saved["identity"], self.identity)
        if differ:
            details = ", ".join(f"{name}: saved {saved['identity'].get(name)!r}, now {self.identity.get(name)!r}"
                                for name in differ)
            raise ResumeMismatch(f"the partial training state at {path} was made under another config ({details}); "
                                 "delete it or set resume to false to start over")
        model.load_state_dict(saved["model"])
        for name, part in self.parts.items():
            part.load_state_dict(saved["parts"][name])
        torch.set_rng_state(saved["torch_rng"])
        self.resumed_from = int(saved["loop"]["epoch"])
        logger.info("resuming from %s after epoch %d", path, self.resumed_from)
        return saved["loop"]

    def maybe_save(self, model: torch.nn.Module, loop: dict[str, Any]) -> bool:
        """Save the state after an epoch if `every_minutes` have passed since the last save; whether it saved."""
        if self.clock() - self.last_saved < self.policy.every_minutes * 60:
            return False
        self.save(model, loop)
        return True

    def save(self, model: torch.nn.Module, loop: dict[str, Any]) -> None:
        """Write the whole state (atomically: a temporary file, then a rename)."""
        path = self.policy.path
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"format": FORMAT_VERSION, "identity": self.identity, "model": model.state_dict(),
                 "parts": {name: part.state_dict() for name, part in self.parts.items()},
                 "torch_rng": torch.get_rng_state(), "loop": loop}
        temporary = path.with_name(path.name + ".tmp")
        torch.save(state, temporary)
        os.replace(temporary, path)
        self.last_saved = self.clock()
        logger.info("saved the training state after epoch %d to %s", loop["epoch"], path)

    def finish(self) -> None:
        """Training ended: the partial state is no longer needed."""
        self.policy.path.unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    """Tuples as lists, so a config compares equal to its saved (and reloaded) self."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
