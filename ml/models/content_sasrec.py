"""Content-SASRec: SASRec whose item table is fused with frozen LLM-derived content embeddings.

The sequence encoder, the loss and the scores are SASRec's (`ml/models/sasrec.py`); only the item
table changes. With `fusion`:

- `hybrid` (default): item vector = learned ID embedding + W c, where c is the item's frozen content
  vector (MiniLM, frozen-LLM CEX or profile embedding) and W a learned linear map (content_dim -> d,
  no bias). The same table embeds the inputs and scores the outputs, as in SASRec. This is the
  route of Harte et al. (RecSys 2023) and LLM-ESR (NeurIPS 2024, its semantic view) reduced to
  one table: items that share words start close, so the long tail and cold items (few or no
  training interactions, whose ID rows barely move) are placed by their content, while head items
  keep the freedom of an ID row.
- `content`: item vector = W c only (no ID embedding): the content-only ablation.
- `init`: an ID-only SASRec whose table starts from the PCA of the content (to d dims, scaled to
  the ID init's std): the initialisation route of LLMEmb / Harte et al.

Choices the papers leave open, and what we do: W starts from N(0, 0.02) like every other weight, so
with unit-norm content (384-d MiniLM) the content term starts at the ID rows' scale (component std
about 0.02) rather than dominating them; no bias, so the padding row stays exactly zero; the
content is a frozen buffer (not fine-tuned), saved in every checkpoint, so a checkpoint is
self-contained and records exactly what it read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from ml.models.sasrec import SASRec, SASRecConfig

Fusion = Literal["hybrid", "content", "init"]


@dataclass(frozen=True)
class ContentSASRecConfig(SASRecConfig):
    """SASRec's settings plus how the frozen content enters the item table."""

    fusion: Fusion = "hybrid"
    content_init_std: float = 0.02  # std of W's init (hybrid/content) and of the PCA table (init)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fusion not in get_args(Fusion):
            raise ValueError(f"fusion must be one of {get_args(Fusion)}, got {self.fusion!r}")
        if self.content_init_std <= 0:
            raise ValueError("content_init_std must be positive")


def pca_table(content: np.ndarray, dim: int, std: float) -> np.ndarray:
    """(n, dim) float32: the content's top `dim` principal components, scaled to an overall std of `std`."""
    centred = content.astype(np.float64) - content.mean(axis=0, keepdims=True)
    # Right singular vectors = principal axes; deterministic up to sign, fixed below for reproducibility.
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:dim]
    axes *= np.where(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    projected = centred @ axes.T
    if projected.shape[1] < dim:  # fewer content dims (or items) than d: the rest stays zero
        projected = np.pad(projected, ((0, 0), (0, dim - projected.shape[1])))
    scale = projected.std()
    return (projected * (std / scale if scale > 0 else 0.0)).astype(np.float32)


class ContentSASRec(SASRec):
    """SASRec over an item table built from learned IDs and frozen content vectors (see the module doc)."""

    def __init__(self, content: np.ndarray, config: ContentSASRecConfig) -> None:
        if content.ndim != 2 or len(content) < 1:
            raise ValueError(f"content must be a (n_items, dim) matrix, got shape {content.shape}")
        super().__init__(len(content), config)
        self.fusion = config.fusion
        padded = np.zeros((len(content) + 1, content.shape[1]), dtype=np.float32)
        padded[1:] = content
        self.register_buffer("content", torch.from_numpy(padded), persistent=False)  # saved by the checkpoint
        self.content_projection: nn.Linear | None = None
        if config.fusion in ("hybrid", "content"):
            self.content_projection = nn.Linear(content.shape[1], config.hidden_dim, bias=False)
            nn.init.normal_(self.content_projection.weight, std=config.content_init_std)
        if config.fusion == "content":
            self.item_embedding = None  # type: ignore[assignment]  # content-only: no ID rows at all
        elif config.fusion == "init":
            with torch.no_grad():
                self.item_embedding.weight[1:] = torch.from_numpy(
                    pca_table(content, config.hidden_dim, config.content_init_std))

    @property
    def device(self) -> torch.device:
        """Device the parameters live on."""
        return self.position_embedding.weight.device

    def item_table(self) -> torch.Tensor:
        """(n_items + 1, hidden_dim) item vectors (row 0 = padding, exactly zero)."""
        if self.content_projection is None:
            return self.item_embedding.weight
        projected = self.content_projection(self.content)
        return projected if self.item_embedding is None else self.item_embedding.weight + projected
