"""Which version each dataset serves: loaded at start, then swapped when CURRENT moves (publish or rollback).

A background thread re-reads every dataset's CURRENT file every `poll_seconds`. A new version is
loaded and verified off to the side and only then swapped in, by replacing one dict reference, so a
request in flight finishes on the version it took. A version that fails to load is refused: the old
one keeps serving and the refusal is kept for `/readyz` and logged, once per version.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ml.data.versioned import NoCurrentVersion
from ml.index.store import IndexVerificationError, index_folder
from serving.catalog import NotFoundError, ServedIndex, load_served

logger = logging.getLogger(__name__)

Loader = Callable[[Path, Path, str, str], ServedIndex]


@dataclass(frozen=True)
class Refusal:
    """A version CURRENT named that could not be served, and why."""

    version: str
    reason: str


class IndexRegistry:
    """The served version of every dataset under `indexes_root`, kept in step with each CURRENT."""

    def __init__(self, indexes_root: Path, checkpoints_root: Path, poll_seconds: float = 1.0,
                 loader: Loader = load_served) -> None:
        self._indexes_root = Path(indexes_root)
        self._checkpoints_root = Path(checkpoints_root)
        self._poll_seconds = poll_seconds
        self._loader = loader
        self._served: dict[str, ServedIndex] = {}
        self._refused: dict[str, Refusal] = {}
        self._refresh_lock = threading.Lock()  # one refresh at a time (the poller and any explicit call)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def datasets_on_disk(self) -> list[str]:
        """Every dataset folder that names a CURRENT version (the only names a request can reach)."""
        if not self._indexes_root.is_dir():
            return []
        return sorted(entry.name for entry in self._indexes_root.iterdir()
                      if entry.is_dir() and (entry / "CURRENT").is_file())

    def refresh(self) -> None:
        """Load whatever CURRENT now names for each dataset, when it is not the version already served."""
        with self._refresh_lock:
            for dataset in self.datasets_on_disk():
                self._refresh_one(dataset)

    def _refresh_one(self, dataset: str) -> None:
        try:
            version = index_folder(self._indexes_root, dataset).current()
        except (NoCurrentVersion, OSError) as error:
            self._refuse(dataset, "?", f"CURRENT cannot be read: {error}")
            return
        served = self._served.get(dataset)
        if served is not None and served.version == version:
            self._refused.pop(dataset, None)  # e.g. rolled back to the version still being served
            return
        refused = self._refused.get(dataset)
        if refused is not None and refused.version == version:
            return  # versions are immutable: one that failed verification fails again
        try:
            loaded = self._loader(self._indexes_root, self._checkpoints_root, dataset, version)
        except (IndexVerificationError, FileNotFoundError, ValueError, OSError) as error:
            self._refuse(dataset, version, str(error))
            return
        # Copy-on-write: readers holding the old dict (and the old ServedIndex) are never disturbed.
        self._served = {**self._served, dataset: loaded}
        self._refused.pop(dataset, None)
        logger.info("serving %s index %s (%s, %d items)%s", dataset, version, loaded.model,
                    len(loaded.loaded.item_ids), f", replacing {served.version}" if served else "")

    def _refuse(self, dataset: str, version: str, reason: str) -> None:
        self._refused[dataset] = Refusal(version, reason)
        still = self._served.get(dataset)
        logger.error("refused %s index %s: %s; %s", dataset, version, reason,
                     f"still serving {still.version}" if still else "nothing to serve for it")

    def get(self, dataset: str) -> ServedIndex:
        """The version serving `dataset` now; raises `NotFoundError` when none is."""
        served = self._served.get(dataset)
        if served is None:
            raise NotFoundError(f"no published index for dataset {dataset!r}; serving: {sorted(self._served)}")
        return served

    def served(self) -> dict[str, ServedIndex]:
        """Every dataset's served version (a snapshot: later swaps do not change it)."""
        return self._served

    def refusals(self) -> dict[str, Refusal]:
        """Each dataset whose CURRENT names a version that is not served, with the reason."""
        return dict(self._refused)

    def start(self) -> None:
        """Load every dataset now, then keep polling CURRENT in a daemon thread."""
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="index-registry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (waits for a load in progress to finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.refresh()
            except Exception:  # the poller must outlive any one bad refresh; the error is logged in full
                logger.exception("index refresh failed; retrying in %.1f s", self._poll_seconds)
