"""The LLM that writes profiles, as a resource: backend, model and decoding are editable in the launchpad."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from ml.llm.local_server import llama_server
from ml.llm.weights import PACKAGED_SMOLLM2, file_digest, packaged_smollm2_gguf, resolve_causal_lm
from ml.profiles.backends import ChatBackend, DecodingSettings, OpenAICompatibleBackend
from ml.profiles.local_backend import TransformersBackend


class LLMResource(dg.ConfigurableResource):
    """Which LLM generates profiles: a local transformers model, a local llama.cpp server, or any OpenAI-style API."""

    backend: Literal["transformers", "llama_cpp_server", "openai"] = Field(
        default="transformers",
        description="transformers: local causal LM, batched; llama_cpp_server: start llama.cpp's OpenAI-compatible "
        "server on a GGUF file for the run; openai: an OpenAI-compatible server at base_url (vLLM, Ollama, OpenAI).",
    )
    model: str = Field(
        default=PACKAGED_SMOLLM2,
        description=f"transformers: {PACKAGED_SMOLLM2!r} (packaged), a .gguf file or a local model folder; "
        "llama_cpp_server: the packaged name or a .gguf file; openai: the server's model name.",
    )
    base_url: str = Field(default="http://127.0.0.1:8000/v1", description="openai backend only.")
    api_key_env: str = Field(default="LLMREC_LLM_API_KEY", description="Env var holding the API key (openai).")
    max_new_tokens: int = 160
    temperature: float = Field(default=0.0, description="0 = greedy, deterministic.")
    repeat_penalty: float = Field(default=1.15, description="Small models loop without one.")
    seed: int = 0
    batch_size: int = Field(default=16, description="Prompts per forward pass (transformers) or requests in flight; "
                            "16 gave 42 tokens/s on 2 CPU cores against 4.7 at 1 (benchmarks/profile_benchmark.py).")
    timeout_s: float = 120.0
    max_retries: int = 3
    threads: int = Field(default=2, description="CPU threads of the llama.cpp server.")
    device: str = "auto"

    def decoding(self) -> DecodingSettings:
        """The decoding settings every backend shares."""
        return DecodingSettings(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, repeat_penalty=self.repeat_penalty,
            seed=self.seed,
        )

    def _gguf(self) -> Path:
        return packaged_smollm2_gguf() if self.model == PACKAGED_SMOLLM2 else Path(self.model).expanduser()

    @contextmanager
    def open_backend(self, model_cache: Path) -> Iterator[ChatBackend]:
        """The configured backend, ready to generate (a llama.cpp server lives as long as the context)."""
        if self.backend == "transformers":
            model_dir = resolve_causal_lm(self.model, model_cache)
            yield TransformersBackend(model_dir, self.decoding(), batch_size=self.batch_size, device=self.device)
        elif self.backend == "llama_cpp_server":
            gguf = self._gguf()
            with llama_server(gguf, alias="local", threads=self.threads) as base_url:
                yield OpenAICompatibleBackend(
                    base_url, "local", api_key="", decoding=self.decoding(), concurrency=1, timeout_s=self.timeout_s,
                    max_retries=self.max_retries, model_id=f"llama.cpp:{gguf.stem}:{file_digest(gguf)}",
                )
        else:
            yield OpenAICompatibleBackend(
                self.base_url, self.model, api_key=os.environ.get(self.api_key_env, ""), decoding=self.decoding(),
                concurrency=self.batch_size, timeout_s=self.timeout_s, max_retries=self.max_retries,
            )
