"""Residual quantisation: error falls level by level, deterministic assignment, collisions, dead-code restarts."""

import numpy as np
import pytest
import torch

from ml.models.residual_quantizer import (
    NO_SUFFIX,
    QuantizerConfig,
    ResidualQuantizer,
    assign_codes,
    resolve_collisions,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _toy_vectors(n: int = 300, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """Clustered vectors: 12 centres with noise, so each level has structure to capture."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    return torch.from_numpy((centres[rng.integers(12, size=n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32))


def _quantizer(seed: int = 0, dim: int = 16) -> ResidualQuantizer:
    torch.manual_seed(seed)
    return ResidualQuantizer(dim, QuantizerConfig(levels=3, codebook_size=8, latent_dim=8, hidden_dim=32))


def test_reconstruction_error_falls_level_by_level() -> None:
    vectors = _toy_vectors()
    quantizer = _quantizer()
    quantizer.init_codebooks(vectors, seed=0)
    codes, final_error, inputs = quantizer.quantize(vectors)
    # inputs[:, l] is what is left after levels < l: its mean norm must shrink with every level, and the
    # last level's leftover (final_error) is smaller still.
    norms = [float(np.linalg.norm(inputs[:, level], axis=1).mean()) for level in range(3)]
    assert norms[0] > norms[1] > norms[2] > float(final_error.mean())
    assert codes.shape == (300, 3) and codes.min() >= 0 and codes.max() < 8


def test_assignment_is_deterministic() -> None:
    vectors = _toy_vectors()
    first, second = _quantizer(), _quantizer()
    for quantizer in (first, second):
        quantizer.init_codebooks(vectors, seed=0)
    a, b = assign_codes(first, vectors), assign_codes(second, vectors)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.suffix, b.suffix)
    again = assign_codes(first, vectors)
    assert again.changed_from(a) == 0


def test_collisions_get_suffixes_nearest_first_and_are_counted() -> None:
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [3, 3]])
    errors = np.array([0.5, 0.1, 0.2, 0.2, 0.0])
    table = resolve_collisions(codes, errors, suffix_size=4)
    # Shared code (1, 2): entity 2 is nearest (0.2, lower index than 3) and keeps it; 3 then 0 get suffixes.
    assert table.suffix.tolist() == [1, NO_SUFFIX, NO_SUFFIX, 0, NO_SUFFIX]
    assert table.collided == 2 and table.largest_group == 3
    assert table.lengths.tolist() == [3, 2, 2, 3, 2]
    full = {tuple(code) + (extra,) for code, extra in zip(table.codes.tolist(), table.suffix.tolist(), strict=True)}
    assert len(full) == 5  # every entity's full code is unique


def test_the_tie_break_moves_extras_to_free_last_codes_under_the_same_prefix() -> None:
    codes = np.array([[1, 2], [1, 2], [1, 2], [1, 0], [0, 2]])
    errors = np.array([0.3, 0.1, 0.2, 0.0, 0.0])
    # Distances to the 3 last-level codewords: entity 2 is nearest code 0 (taken by entity 3 under prefix 1),
    # then code 1; entity 0 then finds no free code under prefix 1 and gets a suffix.
    distances = np.array([[0.0, 0.5, 0.9], [0.2, 0.3, 0.0], [0.1, 0.2, 0.3], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    table = resolve_collisions(codes, errors, suffix_size=4, last_distances=distances)
    assert table.codes.tolist() == [[1, 2], [1, 2], [1, 1], [1, 0], [0, 2]]
    assert table.suffix.tolist() == [0, NO_SUFFIX, NO_SUFFIX, NO_SUFFIX, NO_SUFFIX]
    assert table.moved == 1 and table.collided == 1


def test_a_collapsed_index_is_an_error() -> None:
    with pytest.raises(ValueError, match="collapsed"):
        resolve_collisions(np.zeros((6, 2), dtype=np.int64), np.zeros(6), suffix_size=4)


def test_dead_codes_are_restarted_on_the_worst_quantised_inputs() -> None:
    vectors = _toy_vectors()
    quantizer = _quantizer()
    quantizer.init_codebooks(vectors, seed=0)
    with torch.no_grad():
        quantizer.codebooks[0, 5] = 1e6  # far from everything: no entity picks it
    codes = quantizer.quantize(vectors)[0]
    assert not (codes[:, 0] == 5).any()
    assert quantizer.restart_dead_codes(vectors) >= 1
    assert float(quantizer.codebooks[0, 5].detach().abs().max()) < 1e3
    assert (quantizer.quantize(vectors)[0][:, 0] == 5).any()


def test_straight_through_gradient_reaches_the_encoder() -> None:
    vectors = _toy_vectors(40)
    quantizer = _quantizer()
    quantizer.init_codebooks(vectors, seed=0)
    codes = torch.from_numpy(quantizer.quantize(vectors)[0])
    output = quantizer(vectors, codes)
    torch.nn.functional.mse_loss(output.reconstruction, vectors).backward()
    assert quantizer.encoder[0].weight.grad is not None and quantizer.encoder[0].weight.grad.abs().sum() > 0
    # The reconstruction reads codewords only through the straight-through estimator: no codebook gradient.
    assert quantizer.codebooks.grad is None or quantizer.codebooks.grad.abs().sum() == 0
