"""Hierarchical k-means item codes (EAGER): recurse until every cluster holds a single item.

Every item gets a unique code path (c_1, ..., c_d) of whatever depth its region of the embedding
space needs. The paper says k = 256 children per node; the authors' released code uses k = 128 and
two levels, which is our default: balanced, so every child of a node with n items holds at most
ceil(n / k), and a catalogue takes two levels while k^2 slots hold it, else the fewest that do
(18,357 items at k = 128: three). Choices the paper leaves open, and what we do:

- A cluster with at most k items is not clustered again: each item becomes its own child, numbered
  by distance to the cluster's centroid (closest first, ties by item index). This is the last step of
  "split until one item per cluster" without running k-means with k >= n.
- Plain k-means (faiss, fixed seed) or balanced k-means (same centroids, then a capacity-constrained
  greedy assignment: at most ceil(n / k) items per child, nearest pairs first) by config.
- Collision policy: k-means cannot separate identical embeddings. When a split leaves all items of a
  cluster in one child, the cluster is cut instead into k near-equal slices in centroid-distance
  order, so recursion always progresses and no two items ever share a code.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import Counter
from dataclasses import dataclass

import faiss
import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HierarchicalKMeansConfig:
    """Settings of the hierarchical clustering."""

    branching: int = 128
    balanced: bool = True
    niter: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.branching < 2:
            raise ValueError("branching must be at least 2")


@dataclass(frozen=True)
class HierarchicalCodes:
    """Code paths of items (row i = item i), padded with -1 past each path's end, and how they came out."""

    codes: np.ndarray  # (n_items, depth) int32
    lengths: np.ndarray  # (n_items,) int32
    branching: int
    forced_splits: int  # clusters cut by the collision policy (identical or inseparable embeddings)

    @property
    def depth(self) -> int:
        """Length of the longest code path."""
        return int(self.codes.shape[1])

    def path(self, item: int) -> tuple[int, ...]:
        """The code path of one item."""
        return tuple(int(c) for c in self.codes[item, : self.lengths[item]])

    def usage_per_level(self) -> list[dict[str, float]]:
        """Per level: nodes that branch there, codes used, and mean share of the k children used."""
        stats = []
        for level in range(self.depth):
            present = self.lengths > level
            parents = Counter(self.path_prefix(i, level) for i in np.flatnonzero(present))
            children = {self.path_prefix(i, level + 1) for i in np.flatnonzero(present)}
            child_count = Counter(prefix[:-1] for prefix in children)
            stats.append({
                "level": level + 1,
                "parent_nodes": len(parents),
                "codes_used": len(children),
                "distinct_code_values": len({prefix[-1] for prefix in children}),
                "mean_children_per_parent": float(np.mean(list(child_count.values()))),
                "mean_fill": float(np.mean(list(child_count.values()))) / self.branching,
            })
        return stats

    def path_prefix(self, item: int, length: int) -> tuple[int, ...]:
        """The first `length` codes of an item's path."""
        return tuple(int(c) for c in self.codes[item, :length])

    def shared_codes(self) -> dict[tuple[int, ...], list[int]]:
        """Code paths held by more than one item (empty by construction; reported as a check)."""
        holders: dict[tuple[int, ...], list[int]] = {}
        for item in range(len(self.lengths)):
            holders.setdefault(self.path(item), []).append(item)
        return {path: items for path, items in holders.items() if len(items) > 1}


def _kmeans_centroids(points: np.ndarray, k: int, config: HierarchicalKMeansConfig, seed: int) -> np.ndarray:
    kmeans = faiss.Kmeans(points.shape[1], k, niter=config.niter, seed=seed, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    kmeans.train(points)
    return kmeans.centroids


def _squared_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared L2 distances, (n_points, n_centroids)."""
    return faiss.pairwise_distances(np.ascontiguousarray(points), np.ascontiguousarray(centroids))


def _balanced_assign(distances: np.ndarray) -> np.ndarray:
    """Capacity-constrained assignment: nearest (item, centroid) pairs first, ceil(n/k) items per centroid."""
    n, k = distances.shape
    capacity = np.full(k, math.ceil(n / k))
    assignment = np.full(n, -1)
    order = np.argsort(distances, axis=None, kind="stable")
    unassigned = n
    for flat in order:
        item, centroid = divmod(int(flat), k)
        if assignment[item] < 0 and capacity[centroid] > 0:
            assignment[item] = centroid
            capacity[centroid] -= 1
            unassigned -= 1
            if not unassigned:
                break
    return assignment


def _ranked_by_centroid(points: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Members ordered by distance to their mean, ties by index (a deterministic within-cluster order)."""
    centroid = points.mean(axis=0, keepdims=True)
    distance = ((points - centroid) ** 2).sum(axis=1)
    return members[np.lexsort((members, distance))]


def _split(
    points: np.ndarray, members: np.ndarray, config: HierarchicalKMeansConfig, seed: int
) -> tuple[list[np.ndarray], bool]:
    """Children of one cluster (k-means groups in centroid order), or equal slices if k-means cannot split it.

    The flag says whether the collision policy had to cut the cluster.
    """
    k = config.branching
    centroids = _kmeans_centroids(points, k, config, seed)
    distances = _squared_distances(points, centroids)
    labels = _balanced_assign(distances) if config.balanced else distances.argmin(axis=1)
    groups = [members[labels == child] for child in range(k)]
    groups = [group for group in groups if len(group)]
    if len(groups) > 1:
        return groups, False
    return [part for part in np.array_split(_ranked_by_centroid(points, members), k) if len(part)], True


def hierarchical_codes(embeddings: np.ndarray, config: HierarchicalKMeansConfig | None = None) -> HierarchicalCodes:
    """Code paths for every row of `embeddings` by recursive k-means until each cluster has one item."""
    config = config or HierarchicalKMeansConfig()
    points = np.ascontiguousarray(embeddings, dtype=np.float32)
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("embeddings contain NaN or infinite values")
    paths: list[tuple[int, ...]] = [()] * len(points)
    stack: list[tuple[tuple[int, ...], np.ndarray]] = [((), np.arange(len(points)))]
    forced = 0
    while stack:
        prefix, members = stack.pop()
        if len(members) == 1:
            paths[int(members[0])] = prefix or (0,)
            continue
        if len(members) <= config.branching:
            for code, item in enumerate(_ranked_by_centroid(points[members], members)):
                paths[int(item)] = (*prefix, code)
            continue
        # Each node's seed depends on its path only, so a subtree does not depend on the visiting order.
        node_seed = (config.seed * 1_000_003 + zlib.crc32(repr(prefix).encode())) % (1 << 31)
        children, was_forced = _split(points[members], members, config, node_seed)
        forced += was_forced
        for code, child in enumerate(children):
            stack.append(((*prefix, code), child))
    depth = max(len(path) for path in paths)
    codes = np.full((len(points), depth), -1, dtype=np.int32)
    for item, path in enumerate(paths):
        codes[item, : len(path)] = path
    lengths = np.array([len(path) for path in paths], dtype=np.int32)
    result = HierarchicalCodes(codes=codes, lengths=lengths, branching=config.branching, forced_splits=forced)
    logger.info("hierarchical codes: %d items, depth %d, %d forced splits", len(points), depth, forced)
    return result
