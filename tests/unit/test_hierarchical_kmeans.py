"""Hierarchical k-means codes: unique, deterministic, any depth, balanced when asked."""

from collections import Counter

import numpy as np
import pytest

from ml.codes.hierarchical_kmeans import HierarchicalKMeansConfig, hierarchical_codes


def _clustered(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, dim)) * 5
    return (centers[rng.integers(0, 12, size=n)] + rng.normal(size=(n, dim))).astype(np.float32)


def test_every_item_gets_a_unique_path_of_the_depth_it_needs() -> None:
    codes = hierarchical_codes(_clustered(3_000), HierarchicalKMeansConfig(branching=8, balanced=False))
    paths = [codes.path(i) for i in range(3_000)]
    assert len(set(paths)) == 3_000 and not codes.shared_codes()
    assert codes.depth >= 4  # 8^3 = 512 < 3000: three levels cannot hold every item
    assert all(0 <= code < 8 for path in paths for code in path)
    assert codes.codes.shape == (3_000, codes.depth)
    assert all((codes.codes[i, codes.lengths[i]:] == -1).all() for i in range(3_000))
    usage = codes.usage_per_level()
    assert usage[0]["parent_nodes"] == 1 and usage[0]["codes_used"] <= 8


def test_codes_are_deterministic_for_a_seed() -> None:
    points = _clustered(2_000, seed=3)
    config = HierarchicalKMeansConfig(branching=16, seed=5)
    assert np.array_equal(hierarchical_codes(points, config).codes, hierarchical_codes(points, config).codes)


def test_identical_embeddings_are_still_told_apart() -> None:
    points = np.vstack([np.ones((300, 4)), _clustered(200, dim=4)]).astype(np.float32)
    codes = hierarchical_codes(points, HierarchicalKMeansConfig(branching=4, balanced=False))
    assert not codes.shared_codes()
    assert codes.forced_splits > 0


def test_balanced_kmeans_caps_every_child() -> None:
    points = _clustered(1_000, seed=1)
    codes = hierarchical_codes(points, HierarchicalKMeansConfig(branching=10, balanced=True))
    root_sizes = Counter(int(code) for code in codes.codes[:, 0])
    assert max(root_sizes.values()) <= 100 and len(root_sizes) == 10
    plain = Counter(int(c) for c in hierarchical_codes(
        points, HierarchicalKMeansConfig(branching=10, balanced=False)).codes[:, 0])
    assert max(plain.values()) > 100  # the clustered data is uneven, so the cap is doing something


@pytest.mark.parametrize(("n_items", "levels"), [(64, 2), (65, 3), (16, 2), (8, 1)])
def test_balanced_codes_take_the_fewest_levels_whose_slots_hold_the_catalogue(n_items: int, levels: int) -> None:
    """The default (balanced): two levels while k^2 slots hold the items, else the fewest that do (k = 8)."""
    codes = hierarchical_codes(_clustered(n_items, seed=2), HierarchicalKMeansConfig(branching=8))
    assert codes.depth == levels and not codes.shared_codes()


def test_the_default_is_the_authors_shape() -> None:
    config = HierarchicalKMeansConfig()
    assert (config.branching, config.balanced) == (128, True)


def test_small_sets_take_one_level() -> None:
    codes = hierarchical_codes(_clustered(5), HierarchicalKMeansConfig(branching=8))
    assert codes.depth == 1 and sorted(codes.codes[:, 0].tolist()) == [0, 1, 2, 3, 4]
    single = hierarchical_codes(np.zeros((1, 3), dtype=np.float32))
    assert single.path(0) == (0,)


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros(5), np.array([[np.nan, 1.0]])])
def test_bad_embeddings_are_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        hierarchical_codes(bad)
