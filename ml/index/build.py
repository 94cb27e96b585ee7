"""faiss indexes over item vectors, scored by inner product: exact (flat), an HNSW graph, or IVF-PQ with re-ranking.

At the catalogue sizes of the shipped benchmarks (thousands to tens of thousands of items) an exact
inner-product scan costs well under a millisecond per query, so `flat_ip` is the default. The
approximate kinds are for larger catalogues; `ml.index.publish.verify_index` measures them against
exact search before a version is published. Item vectors are expected to be L2-normalized (inner
product is then cosine similarity) but nothing here requires it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

import faiss
import numpy as np

logger = logging.getLogger(__name__)

IndexKind = Literal["flat_ip", "hnsw", "ivf_pq"]
MIN_POINTS_PER_LIST = 39  # faiss's k-means warns below 39 training points per centroid


@dataclass(frozen=True)
class IndexConfig:
    """How to build and search an item index; recorded in the published manifest."""

    kind: IndexKind = "flat_ip"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    # None: about 4 * sqrt(n) inverted lists (the usual faiss rule of thumb), capped at n / 39 so that
    # k-means gets at least 39 training points per list; resolved and recorded at build time.
    ivf_nlist: int | None = None
    ivf_pq_m: int = 8  # PQ sub-quantizers; must divide the embedding dimension
    ivf_pq_nbits: int = 8  # bits per sub-quantizer code; PQ training needs at least 2**nbits items
    ivf_nprobe: int = 16
    # PQ scores alone reach only ~0.55-0.75 recall@10 on clustered 32-dim test data; re-scoring k * factor
    # PQ candidates with the exact vectors (faiss IndexRefineFlat) lifts that to ~0.99. None: PQ scores only.
    ivf_pq_refine_factor: float | None = 4.0
    min_recall: float = 0.9  # recall@10 floor against exact search for approximate kinds; flat_ip must reach 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in get_args(IndexKind):
            raise ValueError(f"index kind must be one of {get_args(IndexKind)}, not {self.kind!r}")
        positive = ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_pq_m", "ivf_pq_nbits", "ivf_nprobe")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.ivf_nlist is not None and self.ivf_nlist < 1:
            raise ValueError(f"ivf_nlist must be positive, not {self.ivf_nlist}")
        if self.ivf_pq_refine_factor is not None and self.ivf_pq_refine_factor < 1:
            raise ValueError(f"ivf_pq_refine_factor must be at least 1 (or None), not {self.ivf_pq_refine_factor}")
        if not 0.0 <= self.min_recall <= 1.0:
            raise ValueError(f"min_recall must lie in [0, 1], not {self.min_recall}")

    def resolved(self, n_items: int) -> IndexConfig:
        """This config with the size-dependent defaults filled in for a catalogue of `n_items`."""
        if self.kind != "ivf_pq" or self.ivf_nlist is not None:
            return self
        return replace(self, ivf_nlist=default_nlist(n_items))

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (for the manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IndexConfig:
        """A config read back from a manifest; unknown keys are an error rather than silently dropped."""
        unknown = set(values) - {field.name for field in fields(cls)}
        if unknown:
            raise ValueError(f"unknown index config keys {sorted(unknown)}")
        return cls(**values)


def default_nlist(n_items: int) -> int:
    """About 4 * sqrt(n) inverted lists, capped so every list gets at least 39 training points."""
    return max(1, min(round(4 * math.sqrt(n_items)), n_items // MIN_POINTS_PER_LIST))


def _checked_vectors(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
        raise ValueError(f"item vectors must be a non-empty (n, d) matrix, not shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("item vectors contain NaN or infinite values")
    return vectors


def apply_search_params(index: faiss.Index, config: IndexConfig) -> None:
    """Set the search-time knobs of `config` on a built or freshly read index."""
    if config.kind == "hnsw":
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", config.hnsw_ef_search)
    elif config.kind == "ivf_pq":
        # ParameterSpace finds the IVF layer inside the IndexRefine wrapper.
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", config.ivf_nprobe)
        if isinstance(index, faiss.IndexRefine) and config.ivf_pq_refine_factor is not None:
            index.k_factor = float(config.ivf_pq_refine_factor)


def _ivf_pq(vectors: np.ndarray, config: IndexConfig) -> faiss.Index:
    n, dim = vectors.shape
    nlist = config.ivf_nlist or default_nlist(n)
    if dim % config.ivf_pq_m:
        raise ValueError(f"ivf_pq_m={config.ivf_pq_m} does not divide the embedding dimension {dim}")
    if n < 2**config.ivf_pq_nbits or n < nlist:
        raise ValueError(
            f"{n} items are too few to train IVF-PQ with {nlist} lists and {config.ivf_pq_nbits}-bit codes; "
            "use kind='flat_ip' at this scale"
        )
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, config.ivf_pq_m, config.ivf_pq_nbits, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = config.seed  # k-means of the coarse quantizer
    ivf.pq.cp.seed = config.seed  # k-means of each PQ sub-quantizer
    # The refine wrapper must be created before `add` so that it stores the exact vectors as well.
    index = faiss.IndexRefineFlat(ivf) if config.ivf_pq_refine_factor is not None else ivf
    index.train(vectors)
    index.add(vectors)
    return index


def build_index(vectors: np.ndarray, config: IndexConfig | None = None) -> faiss.Index:
    """An inner-product faiss index over `vectors` (float32, (n, d)); row i of the index is row i of `vectors`."""
    vectors = _checked_vectors(vectors)
    n, dim = vectors.shape
    config = (config or IndexConfig()).resolved(n)
    if config.kind == "flat_ip":
        index: faiss.Index = faiss.IndexFlatIP(dim)
        index.add(vectors)
    elif config.kind == "hnsw":
        # HNSW's parallel insertion is not bit-for-bit reproducible; its recall is checked at publish time.
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.add(vectors)
    else:
        index = _ivf_pq(vectors, config)
    apply_search_params(index, config)
    logger.info("built %s index over %d items of dim %d", config.kind, n, dim)
    return index
