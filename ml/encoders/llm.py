"""LEARN's content extractor (CEX): a frozen causal LM whose last-layer states are mean-pooled into item embeddings.

For each text the backbone's last hidden layer (after the final norm, as transformers returns it)
is averaged over the tokens the attention mask marks as real, then L2-normalized, exactly as LEARN
describes. The LM head is never run: only the backbone is needed, which saves the vocabulary-sized
projection. Texts are batched in order of length so little compute goes to padding; the output
keeps the input order. The weights stay frozen (inference mode, eval mode): this encoder is never
trained.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ml.encoders.device import resolve_device
from ml.llm.weights import load_causal_lm, weights_digest

logger = logging.getLogger(__name__)


def masked_mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` (batch, tokens, dim) over the positions where `attention_mask` is 1, L2-normalized."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(summed / counts, dim=-1)


class FrozenLLMEncoder:
    """Mean-pooled, L2-normalized last-layer states of a frozen local causal LM (LEARN's CEX)."""

    def __init__(self, model_dir: Path, device: str = "auto", batch_size: int = 8, max_length: int = 128) -> None:
        self.model_dir = model_dir
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        model, self.tokenizer = load_causal_lm(model_dir, self.device)
        self.tokenizer.padding_side = "right"
        self._backbone = model.base_model
        self.dim = int(model.config.hidden_size)
        # The token cap changes the vectors, so it is part of the cache identity.
        self.model_id = f"llm-mean:{model_dir.name}:{weights_digest(model_dir)}:max{max_length}"
        logger.info("frozen LLM encoder %s on %s (%d-d, max %d tokens)", model_dir, self.device, self.dim, max_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, (n, dim) float32, each row of unit L2 norm."""
        output = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chosen = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[index] for index in chosen], padding=True, truncation=True, max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._backbone(**batch).last_hidden_state
                pooled = masked_mean_pool(hidden.float(), batch["attention_mask"])
                output[chosen] = pooled.cpu().numpy()
        return output
