"""Train Content-SASRec: SASRec's loop (`ml/train/sasrec_training.py`) over a content-fused item table.

Nothing in the loop changes: full softmax cross-entropy at every real position, weighted the same
whatever the batching, early stopping on validation NDCG@10. The only input beyond the sequences is
the frozen content matrix, row i for item index i + 1, in the vocabulary order of `SequenceData`.
"""

from __future__ import annotations

import numpy as np
import torch

from ml.data.sequences import SequenceData
from ml.models.content_sasrec import ContentSASRec, ContentSASRecConfig
from ml.train.early_stopping import EpochCallback
from ml.train.resume import ResumePolicy, array_digest
from ml.train.sasrec_training import SASRecResult, train_sequence_model


def train_content_sasrec(
    data: SequenceData, content: np.ndarray, config: ContentSASRecConfig | None = None,
    on_epoch: EpochCallback | None = None, resume: ResumePolicy | None = None,
) -> SASRecResult:
    """Train on the training split with `content` (n_items, dim) frozen; keep the best validation NDCG@10 epoch.

    `resume`: save and continue the training state (`ml/train/resume.py`), for these content vectors only.
    """
    config = config or ContentSASRecConfig()
    if content.shape[0] != data.n_items:
        raise ValueError(f"content has {content.shape[0]} rows for {data.n_items} items of {data.dataset}")
    if not np.isfinite(content).all():
        raise ValueError("content embeddings hold NaN or infinite values")
    torch.manual_seed(config.seed)
    model = ContentSASRec(np.asarray(content, dtype=np.float32), config)
    return train_sequence_model(model, data, config, on_epoch, name=f"ContentSASRec[{config.fusion}]",
                                resume=resume, frozen_inputs={"content": array_digest(np.asarray(content, np.float32))})
