"""InfoNCE, the contrastive loss shared by the graph backbones (SimGCL) and RLMRec's alignment."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE of row i of `anchors` against row i of `positives`, the other rows as negatives (cosine / T)."""
    if anchors.shape != positives.shape:
        raise ValueError(f"anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} differ")
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    logits = F.normalize(anchors, dim=-1) @ F.normalize(positives, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))
