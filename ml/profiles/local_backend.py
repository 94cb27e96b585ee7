"""The local LLM backend: batched chat generation with a transformers causal LM on this machine.

Decoding is greedy by default (temperature 0), so a prompt gives the same profile on every run;
with a temperature above 0 the sampler is seeded per batch. Prompts are left-padded into batches
(decoder-only models continue from the right edge). Small models drift out of JSON easily, so
when a JSON response is asked for, the assistant turn is prefilled with the opening of the
object (`{"summarization": "`) and that prefix is put back in front of the output: a standard
trick for models without constrained decoding, which turned most of SmolLM2-135M's free-text
answers into parseable profiles. A batch that fails (e.g. out of memory) becomes one error per
prompt, logged, so the runner stores the failures and retries them next run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ml.encoders.device import resolve_device
from ml.llm.weights import load_causal_lm, weights_digest
from ml.profiles.backends import DecodingSettings, Generation
from ml.profiles.prompts import ChatPrompt

logger = logging.getLogger(__name__)

JSON_PREFILL = '{"summarization": "'


class TransformersBackend:
    """Chat completions from a local transformers causal LM, `batch_size` prompts per forward pass."""

    def __init__(
        self, model_dir: Path, decoding: DecodingSettings | None = None, batch_size: int = 8, device: str = "auto"
    ) -> None:
        self.model_dir = model_dir
        self.decoding = decoding or DecodingSettings()
        self.batch_size = max(1, batch_size)
        self.device = resolve_device(device)
        self._model, self._tokenizer = load_causal_lm(model_dir, self.device)
        self._tokenizer.padding_side = "left"
        self.prefill = JSON_PREFILL if self.decoding.response_format != "none" else ""
        self.model_id = f"transformers:{model_dir.name}:{weights_digest(model_dir)}"
        logger.info("local LLM %s on %s, batch %d", model_dir, self.device, self.batch_size)

    def _prompt_texts(self, prompts: Sequence[ChatPrompt]) -> list[str]:
        """Each prompt rendered with the model's chat template, ready for the assistant's turn (plus the prefill)."""
        rendered = self._tokenizer.apply_chat_template(
            [prompt.messages() for prompt in prompts], add_generation_prompt=True, tokenize=False
        )
        return [text + self.prefill for text in rendered]

    def _generate_batch(self, prompts: Sequence[ChatPrompt]) -> list[Generation]:
        decoding = self.decoding
        inputs = self._tokenizer(
            self._prompt_texts(prompts), return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        sampling = decoding.temperature > 0
        if sampling:
            torch.manual_seed(decoding.seed)
        with torch.inference_mode():
            output = self._model.generate(
                **inputs,
                max_new_tokens=decoding.max_new_tokens,
                do_sample=sampling,
                temperature=decoding.temperature if sampling else None,
                top_p=decoding.top_p if sampling else None,
                top_k=None,
                repetition_penalty=decoding.repeat_penalty,
                pad_token_id=self._tokenizer.pad_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        generations = []
        for row in new_tokens:
            ended = (row == self._tokenizer.eos_token_id).nonzero()
            length = int(ended[0, 0]) + 1 if len(ended) else len(row)
            text = self._tokenizer.decode(row[:length], skip_special_tokens=True)
            generations.append(Generation(self.prefill + text, completion_tokens=length))
        return generations

    def generate(self, prompts: Sequence[ChatPrompt]) -> list[Generation]:
        """One Generation per prompt, in order, generated `batch_size` at a time."""
        results: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            try:
                results += self._generate_batch(batch)
            except (RuntimeError, ValueError) as error:  # OOM, over-long input: recorded per prompt, retried later
                logger.exception("local generation failed for a batch of %d prompts", len(batch))
                results += [Generation(None, f"{type(error).__name__}: {error}") for _ in batch]
        return results
