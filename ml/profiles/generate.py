"""Generate profiles for the entities that need one, within a budget, committing batch by batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ml.data.warehouse import Connect
from ml.profiles.backends import ChatBackend
from ml.profiles.cache import ProfileKey, ProfileResult, ensure_profile_table, pending_keys, store_results
from ml.profiles.parsing import Profile, ProfileFailure, parse_profile
from ml.profiles.prompts import ChatPrompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationStats:
    """What one generation run did."""

    requested: int
    cached: int
    generated: int
    succeeded: int
    failed: int
    left_for_later: int
    seconds: float
    completion_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of this run (as the backend counted them)."""
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def profiles_per_minute(self) -> float:
        """Generation throughput of this run."""
        return 60.0 * self.generated / self.seconds if self.seconds > 0 else 0.0


def generate_profiles(
    connect: Connect,
    backend: ChatBackend,
    dataset: str,
    kind: str,
    prompts: dict[str, ChatPrompt],
    budget: int | None = None,
    batch_size: int = 8,
) -> GenerationStats:
    """Profiles for every entity in `prompts` without a cached one, at most `budget` of them this run.

    The warehouse is opened to look up the cache and to store each batch, never during generation.
    """
    keys = [ProfileKey(entity, prompt.prompt_hash) for entity, prompt in prompts.items()]
    with connect() as con:
        ensure_profile_table(con)
        pending = pending_keys(con, dataset, kind, backend.model_id, keys)
    selected = pending if budget is None else pending[: max(0, budget)]
    start = time.perf_counter()
    succeeded = failed = tokens = 0
    for offset in range(0, len(selected), batch_size):
        batch: Sequence[ProfileKey] = selected[offset : offset + batch_size]
        outputs = backend.generate([prompts[key.entity_id] for key in batch])
        tokens += sum(output.completion_tokens for output in outputs)
        results = []
        for key, output in zip(batch, outputs, strict=True):
            outcome: Profile | ProfileFailure = (
                parse_profile(output.text) if output.text is not None
                else ProfileFailure(f"request failed: {output.error}")
            )
            succeeded += isinstance(outcome, Profile)
            failed += isinstance(outcome, ProfileFailure)
            results.append(ProfileResult(key, outcome, output.text or ""))
        with connect() as con:
            store_results(con, dataset, kind, backend.model_id, results)
        logger.info("%s %s profiles: %d/%d done (%d failed)", dataset, kind, offset + len(batch), len(selected), failed)
    stats = GenerationStats(
        requested=len(keys), cached=len(keys) - len(pending), generated=len(selected), succeeded=succeeded,
        failed=failed, left_for_later=len(pending) - len(selected), seconds=time.perf_counter() - start,
        completion_tokens=tokens,
    )
    logger.info("%s %s profiles: %s", dataset, kind, stats)
    return stats
