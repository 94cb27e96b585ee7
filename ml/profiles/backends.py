"""LLM backends behind one interface: prompts in, raw texts (or a per-prompt error) out.

`OpenAICompatibleBackend` talks to any OpenAI-style `/chat/completions` server (vLLM, Ollama,
llama.cpp's server, OpenAI) with concurrent requests, timeouts and retries with exponential
backoff. A request that still fails comes back as an error for that prompt, not an exception, so
one bad entity never sinks a batch. Decoding is deterministic by default (temperature 0, fixed
seed), with a repeat penalty and a token cap because small models loop without them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import requests

from ml.profiles.prompts import ChatPrompt

logger = logging.getLogger(__name__)

PROFILE_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"summarization": {"type": "string"}, "reasoning": {"type": "string"}},
    "required": ["summarization", "reasoning"],
}
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Generation:
    """One prompt's outcome: the model's text, or why no text came back."""

    text: str | None
    error: str | None = None
    completion_tokens: int = 0  # as the server's usage reports it (0 when it does not)


class ChatBackend(Protocol):
    """Generates one completion per chat prompt."""

    model_id: str

    def generate(self, prompts: Sequence[ChatPrompt]) -> list[Generation]:
        """One Generation per prompt, in order."""
        ...


@dataclass(frozen=True)
class DecodingSettings:
    """How completions are decoded: deterministic, capped and de-looped by default."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    repeat_penalty: float = 1.15
    seed: int = 0
    # "json_schema": constrain output to PROFILE_JSON_SCHEMA, sent in llama.cpp's form
    # {"type": "json_object", "schema": ...}; "json_object": any JSON object (for servers that reject
    # the schema field); "none": free text (parsing repairs what it can).
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"


class OpenAICompatibleBackend:
    """Chat completions from an OpenAI-compatible HTTP server."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        decoding: DecodingSettings | None = None,
        concurrency: int = 4,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        model_id: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("LLMREC_LLM_API_KEY", "")
        self.decoding = decoding or DecodingSettings()
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # The cache identity of the profiles; a server on a throwaway port passes one naming its weights instead.
        self.model_id = model_id or f"openai:{self.base_url}:{model}"
        self._session = requests.Session()

    def _payload(self, prompt: ChatPrompt) -> dict[str, Any]:
        decoding = self.decoding
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": prompt.messages(),
            "max_tokens": decoding.max_new_tokens,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "seed": decoding.seed,
            # llama.cpp's name for it; OpenAI-style servers ignore fields they do not know.
            "repeat_penalty": decoding.repeat_penalty,
        }
        if decoding.response_format == "json_schema":
            payload["response_format"] = {"type": "json_object", "schema": PROFILE_JSON_SCHEMA}
        elif decoding.response_format == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return payload

    def _complete(self, prompt: ChatPrompt) -> Generation:
        """One completion, retried with exponential backoff on timeouts, connection errors and 429/5xx."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._session.post(
                    f"{self.base_url}/chat/completions", json=self._payload(prompt), headers=headers,
                    timeout=self.timeout_s,
                )
            except (requests.Timeout, requests.ConnectionError) as error:
                last_error = f"{type(error).__name__}: {error}"
                logger.warning("LLM request failed (attempt %d): %s", attempt + 1, last_error)
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                logger.warning("LLM request failed (attempt %d): %s", attempt + 1, last_error)
                continue
            if response.status_code != 200:
                return Generation(None, f"HTTP {response.status_code}: {response.text[:200]}")
            try:
                body = response.json()
                tokens = int((body.get("usage") or {}).get("completion_tokens") or 0)
                return Generation(body["choices"][0]["message"]["content"] or "", completion_tokens=tokens)
            except (ValueError, KeyError, IndexError, TypeError) as error:
                return Generation(None, f"malformed response ({error!r}): {response.text[:200]}")
        return Generation(None, f"gave up after {self.max_retries + 1} attempts: {last_error}")

    def generate(self, prompts: Sequence[ChatPrompt]) -> list[Generation]:
        """Completions for all prompts, `concurrency` requests in flight at a time, in prompt order."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._complete, prompts))
