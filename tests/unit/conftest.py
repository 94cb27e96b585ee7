"""Fixtures shared by the unit tests."""

from collections.abc import Iterator

import faiss
import pytest
import torch


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; with two, a busy second core makes them ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_faiss_thread() -> Iterator[None]:
    """One OpenMP thread: faster than oversubscribed threads on a shared CI box, and reproducible."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
