"""A folder of immutable versions with a `CURRENT` pointer: write a version aside, then switch atomically.

Each version is written into a hidden staging folder and renamed into place, so readers never see
a half-written version; the pointer file is replaced with `os.replace`, which is atomic on POSIX.
Versions are named by their content, so writing the same content again is a no-op and a rerun
leaves the same version current. Earlier versions stay on disk for comparison and rollback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

POINTER = "CURRENT"


class NoCurrentVersion(FileNotFoundError):
    """Nothing has been published in this folder yet."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


class VersionedFolder:
    """Immutable version folders under `base`, and which one is current."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def path(self, version: str) -> Path:
        """The folder of one version."""
        return self.base / version

    def versions(self) -> list[str]:
        """Every complete version, oldest first by name (names are content digests or timestamps)."""
        if not self.base.is_dir():
            return []
        return sorted(entry.name for entry in self.base.iterdir() if entry.is_dir() and not entry.name.startswith("."))

    def current(self) -> str:
        """The version the pointer names."""
        pointer = self.base / POINTER
        if not pointer.is_file():
            raise NoCurrentVersion(f"nothing published under {self.base}")
        version = pointer.read_text().strip()
        if not self.path(version).is_dir():
            raise NoCurrentVersion(f"{pointer} names {version!r}, which does not exist")
        return version

    def write(self, version: str, writer: Callable[[Path], None]) -> Path:
        """Create version `version` by calling `writer(folder)` on a staging folder; an existing version is kept."""
        target = self.path(version)
        if target.is_dir():
            return target
        self.base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.base))
        try:
            writer(staging)
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # a concurrent writer of the same content won the rename: fine
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def point_to(self, version: str) -> None:
        """Make `version` current (atomic replace of the pointer file)."""
        if not self.path(version).is_dir():
            raise FileNotFoundError(f"no version {version!r} under {self.base}")
        handle, temporary = tempfile.mkstemp(prefix=".pointer-", dir=self.base)
        with os.fdopen(handle, "w") as pointer:
            pointer.write(version + "\n")
        os.replace(temporary, self.base / POINTER)


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write a JSON document with stable key order (manifests are compared and checksummed)."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
