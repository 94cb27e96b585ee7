"""Residual quantisation (RQ-VAE) of semantic vectors into M-token codes, ED2's dual dynamic index.

An encoder maps each entity's semantic vector to a latent z; level l quantises the residual
r_l = z - q_1 - ... - q_{l-1} to its nearest codeword q_l of codebook l (N codewords); the code is
(c_1, ..., c_M). A decoder reconstructs the semantic vector from the straight-through quantised latent
z + sg(sum q_l - z), so the reconstruction's gradient reaches the encoder.

Choices the paper leaves open, and what we do:

- Codebooks are initialised by k-means on the encoded semantic vectors, level by level on the
  residuals (faiss, fixed seed), as the authors' RQ-VAE does on its first batch.
- Losses: the reconstruction (MSE) and the commitment term beta * ||r_l - sg(q_l)||^2 (beta = 0.25,
  VQ-VAE's); the codebook side ||sg(r_l) - q_l||^2 is returned apart (`codebook`) because ED2's
  token-level regulator is that pull (see `ml/models/ed2.py`).
- A level's residual chain uses the codes of the entity's current table (`forward(x, codes)`), so
  the codewords the recommender reads and the ones the losses pull are the same.
- Dead codes (no entity assigned) are restarted on the level inputs with the largest quantisation
  error (ties by entity index), so a level never wastes codewords.
- Assignment is a deterministic argmin (the first codeword on ties). Collisions (two entities with
  one code) are resolved deterministically: the entity nearest its quantised vector keeps the code
  (ties by entity index); each other one moves to its nearest last-level codeword unused under the
  same prefix (as LC-Rec's and the authors' conflict step does with Sinkhorn, here greedily); only
  when a prefix has no free codeword left, the k-th other gets suffix token k - 1. `assign_codes`
  counts both.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

NO_SUFFIX = -1


@dataclass(frozen=True)
class QuantizerConfig:
    """Shape of one residual quantiser: M levels of N codewords in a latent of `latent_dim`."""

    levels: int = 4
    codebook_size: int = 64
    latent_dim: int = 64
    hidden_dim: int = 256
    commitment_weight: float = 0.25  # VQ-VAE's beta
    kmeans_iters: int = 25

    def __post_init__(self) -> None:
        for name in ("levels", "codebook_size", "latent_dim", "hidden_dim", "kmeans_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.codebook_size < 2:
            raise ValueError("codebook_size must be at least 2")
        if self.commitment_weight < 0:
            raise ValueError("commitment_weight must be >= 0")


@dataclass(frozen=True)
class CodeTable:
    """Each entity's code (row i = entity i), its collision suffix (-1 = none) and how the table came out."""

    codes: np.ndarray  # (n, levels) int64
    suffix: np.ndarray  # (n,) int64, NO_SUFFIX for the entity that keeps the bare code
    collided: int  # entities that needed a suffix
    largest_group: int  # most entities sharing one bare code (after the last-level tie-break)
    moved: int = 0  # entities moved to a free last-level code by the tie-break

    def __post_init__(self) -> None:
        if self.codes.ndim != 2 or self.suffix.shape != (len(self.codes),):
            raise ValueError("codes must be (n, levels) with one suffix per entity")

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per entity: the levels, plus one where a suffix was needed."""
        return self.codes.shape[1] + (self.suffix != NO_SUFFIX).astype(np.int64)

    def changed_from(self, other: CodeTable) -> int:
        """Entities whose full code (levels and suffix) differs from `other`'s."""
        if other.codes.shape != self.codes.shape:
            raise ValueError("code tables of different shapes")
        return int(((self.codes != other.codes).any(axis=1) | (self.suffix != other.suffix)).sum())


@dataclass
class QuantizerOutput:
    """Level inputs, chosen codewords, straight-through latent and reconstruction of a batch."""

    level_inputs: torch.Tensor  # (n, levels, latent) residual entering each level
    chosen: torch.Tensor  # (n, levels, latent) the codeword of the entity's code at each level
    reconstruction: torch.Tensor  # (n, input_dim)

    def commitment(self) -> torch.Tensor:
        """Mean ||r_l - sg(q_l)||^2 over entities and levels (pulls the encoder to its codewords)."""
        return F.mse_loss(self.level_inputs, self.chosen.detach())

    def codebook(self) -> torch.Tensor:
        """Mean ||sg(r_l) - q_l||^2 over entities and levels (pulls codewords to their inputs)."""
        return F.mse_loss(self.chosen, self.level_inputs.detach())


def check_index_capacity(kind: str, count: int, levels: int, codebook_size: int) -> None:
    """Fail fast when N^M codes with N suffix tokens cannot tell `count` entities apart; warn when N^M < count.

    Below N^M codes per entity the last level must carry several entities per code on average, and
    residual quantisation never spreads them evenly, so the suffix overflows (the collapse error) after
    pre-training: amazon-beauty's 22,363 users at M = 2 do with N = 64 (4,096 codes), not with N = 160.
    """
    codes = codebook_size ** levels
    if codes * (codebook_size + 1) < count:
        raise ValueError(f"{codes:,} codes x {codebook_size + 1} suffixes cannot hold {count:,} {kind}s: raise "
                         f"codebook_size or levels")
    if codes < count:
        needed = math.ceil(count ** (1 / levels))
        logger.warning("ED2 %s index: %d^%d = %s codes for %s %ss; expect a collapse unless codebook_size >= %d",
                       kind, codebook_size, levels, f"{codes:,}", f"{count:,}", kind, needed)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def kmeans_centroids(vectors: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """(k, dim) k-means centroids of `vectors` (faiss, fixed seed); rows repeat when there are fewer vectors than k."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) <= k:
        return vectors[np.arange(k) % len(vectors)].copy()
    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=iters, seed=seed, verbose=False, min_points_per_centroid=1)
    kmeans.train(vectors)
    return np.asarray(kmeans.centroids, dtype=np.float32)


class ResidualQuantizer(nn.Module):
    """Encoder, M residual codebooks and decoder over semantic vectors of width `input_dim`."""

    def __init__(self, input_dim: int, config: QuantizerConfig) -> None:
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.encoder = _mlp([input_dim, config.hidden_dim, config.latent_dim])
        self.decoder = _mlp([config.latent_dim, config.hidden_dim, input_dim])
        self.codebooks = nn.Parameter(torch.zeros(config.levels, config.codebook_size, config.latent_dim))

    @torch.no_grad()
    def init_codebooks(self, vectors: torch.Tensor, seed: int) -> None:
        """k-means on the encoded vectors, level by level on the residuals."""
        residual = self.encoder(vectors).cpu().numpy()
        for level in range(self.config.levels):
            centroids = kmeans_centroids(residual, self.config.codebook_size, self.config.kmeans_iters, seed + level)
            self.codebooks[level] = torch.from_numpy(centroids)
            residual = residual - centroids[self._nearest(torch.from_numpy(residual), level).numpy()]

    def _nearest(self, residual: torch.Tensor, level: int) -> torch.Tensor:
        """Index of each row's nearest codeword at `level` (squared L2; the first on ties)."""
        book = self.codebooks[level].to(residual.device)
        distances = (residual.pow(2).sum(1, keepdim=True) - 2 * residual @ book.T + book.pow(2).sum(1)[None, :])
        return distances.argmin(dim=1)

    @torch.no_grad()
    def quantize(self, vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greedy codes (n, levels), the final residual norms (n,) and level inputs (n, levels, latent)."""
        residual = self.encoder(vectors)
        codes, inputs = [], []
        for level in range(self.config.levels):
            inputs.append(residual)
            nearest = self._nearest(residual, level)
            codes.append(nearest)
            residual = residual - self.codebooks[level][nearest]
        return (torch.stack(codes, dim=1).cpu().numpy().astype(np.int64), residual.norm(dim=1).cpu().numpy(),
                torch.stack(inputs, dim=1).cpu().numpy())

    def forward(self, vectors: torch.Tensor, codes: torch.Tensor) -> QuantizerOutput:
        """Level inputs and codewords along the given codes (n, levels), and the straight-through reconstruction."""
        latent = self.encoder(vectors)
        residual = latent
        inputs, chosen = [], []
        for level in range(self.config.levels):
            codeword = self.codebooks[level][codes[:, level]]
            inputs.append(residual)
            chosen.append(codeword)
            residual = residual - codeword.detach()
        quantized = torch.stack(chosen, dim=1).sum(dim=1)
        straight_through = latent + (quantized - latent).detach()
        return QuantizerOutput(torch.stack(inputs, dim=1), torch.stack(chosen, dim=1), self.decoder(straight_through))

    def own_loss(self, vectors: torch.Tensor, output: QuantizerOutput) -> torch.Tensor:
        """The quantiser's own objective: reconstruction + beta * commitment."""
        return F.mse_loss(output.reconstruction, vectors) + self.config.commitment_weight * output.commitment()

    @torch.no_grad()
    def restart_dead_codes(self, vectors: torch.Tensor) -> int:
        """Move every codeword no entity of `vectors` picks onto the level inputs quantised worst; the number moved."""
        codes, _, inputs = self.quantize(vectors)
        moved = 0
        for level in range(self.config.levels):
            used = np.bincount(codes[:, level], minlength=self.config.codebook_size)
            dead = np.flatnonzero(used == 0)
            if not len(dead):
                continue
            level_inputs = inputs[:, level]
            errors = ((level_inputs - self.codebooks[level].cpu().numpy()[codes[:, level]]) ** 2).sum(axis=1)
            worst = np.lexsort((np.arange(len(errors)), -errors))[: len(dead)]  # largest error first, then index
            self.codebooks[level, torch.from_numpy(dead[: len(worst)])] = torch.from_numpy(
                level_inputs[worst]).to(self.codebooks.device)
            moved += len(worst)
        return moved


def assign_codes(quantizer: ResidualQuantizer, vectors: torch.Tensor) -> CodeTable:
    """The current quantiser's code of every entity, collisions resolved (see `resolve_collisions`)."""
    codes, errors, inputs = quantizer.quantize(vectors)
    last = quantizer.config.levels - 1
    book = quantizer.codebooks[last].detach().cpu().numpy()
    last_distances = ((inputs[:, last, None, :] - book[None, :, :]) ** 2).sum(axis=2)
    return resolve_collisions(codes, errors, quantizer.config.codebook_size, last_distances)


def resolve_collisions(codes: np.ndarray, errors: np.ndarray, suffix_size: int,
                       last_distances: np.ndarray | None = None) -> CodeTable:
    """Unique codes: a free last-level code under the same prefix, else a suffix token (see the module doc).

    Entities sharing a code are taken nearest first (`errors`, then index); the first keeps it. With
    `last_distances` (n, N: each entity's squared distance to every last-level codeword), each other
    one moves to its nearest last-level codeword that no entity with the same prefix uses (a
    deterministic tie-break, counted in `moved`); what still collides, or everything without
    `last_distances`, gets suffix tokens 0, 1, ... (counted in `collided`).
    """
    codes = np.array(codes, dtype=np.int64)
    errors = np.asarray(errors)
    moved = 0
    if last_distances is not None and len(codes):
        rank = _ranks_within_groups(codes, errors)
        prefixes: dict[tuple[int, ...], set[int]] = {}
        for row in range(len(codes)):
            prefixes.setdefault(tuple(codes[row, :-1]), set()).add(int(codes[row, -1]))
        for row in np.lexsort((np.arange(len(codes)), errors, rank)):
            if rank[row] == 0:
                continue
            used = prefixes[tuple(codes[row, :-1])]
            free = [code for code in np.argsort(last_distances[row], kind="stable") if int(code) not in used]
            if free:
                codes[row, -1] = int(free[0])
                used.add(int(free[0]))
                moved += 1
    suffix = np.full(len(codes), NO_SUFFIX, dtype=np.int64)
    if not len(codes):
        return CodeTable(codes, suffix, 0, 0, moved)
    rank = _ranks_within_groups(codes, errors)
    largest = int(rank.max()) + 1
    if largest - 1 > suffix_size:
        raise ValueError(f"{largest} entities share one code, more than the {suffix_size} suffix tokens can tell "
                         "apart: the index has collapsed (raise codebook_size or levels)")
    suffix = np.where(rank > 0, rank - 1, NO_SUFFIX)
    return CodeTable(codes, suffix, int((rank > 0).sum()), largest, moved)


def _ranks_within_groups(codes: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Per entity, its place among the entities with the same code: by error, then index (0 = first)."""
    order = np.lexsort((np.arange(len(codes)), errors, *codes.T[::-1]))  # by code, then error, then index
    sorted_codes = codes[order]
    starts = np.concatenate([[True], (sorted_codes[1:] != sorted_codes[:-1]).any(axis=1)])
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(codes)), 0))
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - group_start
    return rank
