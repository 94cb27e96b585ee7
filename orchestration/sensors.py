"""A sensor that requests a full-pipeline run for a dataset whose raw files or registry entry changed."""


import hashlib
import json
from pathlib import Path

import dagster as dg

from ml.data.registry import DatasetRegistry
from orchestration.jobs import full_pipeline_job
from orchestration.partitions import dataset_partitions
from orchestration.resources import DatasetRegistryResource

CHUNK_BYTES = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes ('missing' when it does not exist)."""
    if not path.is_file():
        return "missing"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_fingerprints(registry: DatasetRegistry) -> dict[str, str]:
    """Per dataset, one hash over its registry entry and the content of each raw file."""
    fingerprints = {}
    for name in registry.names:
        parts = [registry.get(name).fingerprint()] + [file_digest(path) for path in registry.raw_files(name)]
        fingerprints[name] = hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
    return fingerprints


@dg.sensor(
    job=full_pipeline_job,
    minimum_interval_seconds=60,
    description="Runs the full pipeline for a dataset whose raw files or registry entry are new or changed.",
)
def raw_files_sensor(context: dg.SensorEvaluationContext, registry: DatasetRegistryResource):
    """Compare each dataset's fingerprint with the cursor; request a run for each one that changed."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = dataset_fingerprints(registry.load())
    # A dataset added to the registry becomes a partition when the code location reloads; until then
    # it stays out of the cursor, so the first tick after the reload requests its run.
    known = set(dataset_partitions.get_partition_keys())
    for name in sorted(set(current) - known):
        context.log.warning("dataset %r is in the registry but not yet a partition: reload the code location", name)
        del current[name]
    run_requests = [
        dg.RunRequest(
            run_key=f"{name}:{fingerprint}",
            partition_key=name,
            tags={"trigger": "raw_files_changed", "fingerprint": fingerprint},
        )
        for name, fingerprint in current.items()
        if seen.get(name) != fingerprint
    ]
    if not run_requests:
        return dg.SkipReason("no dataset's raw files or registry entry changed")
    return dg.SensorResult(run_requests=run_requests, cursor=json.dumps({**seen, **current}, sort_keys=True))
