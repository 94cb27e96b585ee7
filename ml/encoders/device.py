"""Pick the compute device: CUDA when present, else CPU (an explicit setting wins)."""

from __future__ import annotations

import torch


def resolve_device(requested: str = "auto") -> str:
    """'auto' becomes 'cuda' when a GPU is visible and 'cpu' otherwise; anything else passes through."""
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"
