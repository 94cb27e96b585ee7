"""One partition per dataset of the registry."""


import dagster as dg

from ml.data.registry import load_registry
from orchestration.paths import registry_path

# Static partitions read from datasets.yaml when the code location loads: a new registry entry
# becomes a partition on the next reload (the UI's "Reload definitions", or a restart).
dataset_partitions = dg.StaticPartitionsDefinition(load_registry(registry_path()).names)
