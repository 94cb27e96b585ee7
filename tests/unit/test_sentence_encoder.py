"""The packaged all-MiniLM-L6-v2 encoder, loaded offline, and the content-hash embedding cache."""

import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from ml.data.warehouse import open_warehouse
from ml.encoders.cache import EMBEDDING_TABLE, encode_cached, fill_cache, read_cached
from ml.encoders.sentence import SentenceEncoder, packaged_minilm_dir


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(device="cpu", batch_size=16)


def test_the_model_ships_inside_a_wheel() -> None:
    folder = packaged_minilm_dir()
    assert (folder / "model.safetensors").is_file() and "site-packages" in str(folder)


def test_embeddings_are_unit_vectors_that_capture_meaning(encoder: SentenceEncoder) -> None:
    vectors = encoder.encode(["red matte lipstick", "a lipstick in matte red", "synthetic motor oil for cars"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    assert encoder.encode([]).shape == (0, 384)


def test_cache_encodes_each_text_once(encoder: SentenceEncoder, tmp_path: Path) -> None:
    connect = partial(open_warehouse, tmp_path / "cache.duckdb")
    texts = ["lipstick", "mascara", "lipstick", "nail polish"]
    first = encode_cached(connect, encoder, texts)
    assert (first.encoded, first.reused) == (3, 0)
    assert np.allclose(first.vectors, encoder.encode(texts), atol=1e-6)
    again = encode_cached(connect, encoder, texts)
    assert (again.encoded, again.reused) == (0, 3)
    assert np.array_equal(again.vectors, first.vectors)
    changed = encode_cached(connect, encoder, ["lipstick", "eyeliner"])
    assert (changed.encoded, changed.reused) == (1, 1)
    with connect() as con:
        assert con.execute(f"select count(*) from {EMBEDDING_TABLE}").fetchone() == (4,)
    # No texts (no user has a profile yet): an empty matrix of the encoder's width, not a reshape error.
    empty = encode_cached(connect, encoder, [])
    assert empty.vectors.shape == (0, 384) and (empty.encoded, empty.reused) == (0, 0)


def test_a_budgeted_fill_encodes_the_first_missing_texts_and_resumes(encoder: SentenceEncoder, tmp_path: Path) -> None:
    connect = partial(open_warehouse, tmp_path / "cache.duckdb")
    texts = ["toner", "serum", "toner", "sunscreen", "cleanser"]
    first = fill_cache(connect, encoder, texts, max_new=2)
    assert (first.encoded, first.reused, first.left) == (2, 0, 2)
    with connect() as con, pytest.raises(ValueError, match="2 of 5 texts have no cached"):
        read_cached(con, encoder, texts)
    # The first two distinct texts, in request order, are the ones encoded.
    with connect() as con:
        assert read_cached(con, encoder, ["toner", "serum"]).shape == (2, 384)
    second = fill_cache(connect, encoder, texts, max_new=10)
    assert (second.encoded, second.reused, second.left) == (2, 2, 0)
    with connect() as con:
        assert np.allclose(read_cached(con, encoder, texts), encoder.encode(texts), atol=1e-6)
    assert fill_cache(connect, encoder, texts, max_new=0) == fill_cache(connect, encoder, texts)
    with pytest.raises(ValueError, match="max_new"):
        fill_cache(connect, encoder, texts, max_new=-1)


class _ProbingEncoder:
    """The real encoder, but before each batch another process checks that it can open the warehouse."""

    def __init__(self, encoder: SentenceEncoder, warehouse: Path) -> None:
        self.encoder, self.warehouse = encoder, warehouse
        self.model_id, self.dim, self.device = encoder.model_id, encoder.dim, encoder.device
        self.probes: list[int] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        probe = subprocess.run([sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1], "
                                "read_only=True).close()", str(self.warehouse)], capture_output=True, text=True)
        self.probes.append(probe.returncode)
        return self.encoder.encode(texts)


def test_the_warehouse_is_free_while_texts_are_encoded(encoder: SentenceEncoder, tmp_path: Path) -> None:
    """Other processes (serving, a notebook) can open the warehouse during encoding, between the cache writes."""
    warehouse = tmp_path / "cache.duckdb"
    probing = _ProbingEncoder(encoder, warehouse)
    fill = fill_cache(partial(open_warehouse, warehouse), probing, ["a", "b", "c", "d", "e"], batch_size=2)
    assert fill.encoded == 5 and probing.probes == [0, 0, 0]
