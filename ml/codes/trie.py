"""Item code paths as decoder tokens, their prefix trie, and constrained beam search over it.

A generative recommender (EAGER, ED2) names an item by a short path of codes and generates that path
token by token. This module holds what such models share:

- `CodeVocabulary`: code c at level l is token `n_special + l * branching + c`, so a decoder knows the
  level of every token; every path ends with the `END` token, so paths of different depths are
  told apart (a prefix of one path is never mistaken for another item). With `n_parent_blocks`
  (`per_parent_vocabulary`), the children of every node that holds a leaf get a block of
  `branching` tokens of their own, as in EAGER's released code (token `c1 * k + c2` at the second
  level): the last token names its item, so no END is needed, and its softmax runs over the
  parent's children only (`ChildBlocks`).
- `CodeTrie`: the token paths of the real items as a prefix trie in CSR arrays (children of a node
  sorted by token), so masks of the allowed next tokens and child lookups are vectorised. A path
  ends at its END token or, without one, at its last token.
- `constrained_beam_search`: beam search in which every step may only extend a prefix of a real
  item's path, so every returned path is an item. The model's next-token distribution is
  renormalised over the allowed tokens, so a path's score is the log-probability of its item under
  the constrained model (comparable across streams, each a distribution over the same items), and
  forced moves cost nothing. Finished beams (at a leaf) keep their score and compete with unfinished
  ones on total log-probability, the usual rule for variable-length beams. With `ChildBlocks`, the
  search scores only each node's block of `branching` slots instead of the whole vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

PAD, SOS, END, SUMMARY, CLS, MASK = 0, 1, 2, 3, 4, 5
N_SPECIAL = 6
TokenArray = TypeVar("TokenArray", np.ndarray, torch.Tensor)  # token ids, numpy or torch


@dataclass(frozen=True)
class CodeVocabulary:
    """Token ids of code paths: special tokens first, `depth` levels of `branching` codes, then per-parent blocks.

    With `n_parent_blocks` = 0 every code is its level's token and paths end with END. Above 0 the
    vocabulary comes from `per_parent_vocabulary`: the nodes that hold a leaf have their own block.
    """

    branching: int
    depth: int
    n_parent_blocks: int = 0

    @property
    def size(self) -> int:
        """Number of token ids (special tokens included)."""
        return self.parent_base + self.n_parent_blocks * self.branching

    @property
    def parent_base(self) -> int:
        """Token id of the first per-parent block's slot 0 (the end of the level blocks)."""
        return N_SPECIAL + self.depth * self.branching

    @property
    def per_parent(self) -> bool:
        """Whether the nodes that hold a leaf have blocks of their own (and paths carry no END)."""
        return self.n_parent_blocks > 0

    def item_tokens(self, codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(n_items, depth + 1) int64 token paths: the codes as tokens, END after the last (shared levels
        only), PAD after that; the last column is END or PAD."""
        codes, lengths, inside = _checked_codes(codes, lengths, self.branching, self.depth)
        return self._path_tokens(codes, lengths, inside, _parent_blocks(codes, lengths) if self.per_parent else {})

    def _path_tokens(self, codes: np.ndarray, lengths: np.ndarray, inside: np.ndarray,
                     blocks: dict[tuple[int, ...], int]) -> np.ndarray:
        """`item_tokens` of checked codes, given the block number of every node holding a leaf (per-parent)."""
        level = np.arange(codes.shape[1])[None, :]
        tokens = np.full((len(codes), self.depth + 1), PAD, dtype=np.int64)
        tokens[:, : codes.shape[1]] = np.where(inside, N_SPECIAL + level * self.branching + codes, PAD)
        if not self.per_parent:
            tokens[np.arange(len(codes)), lengths] = END
            return tokens
        if len(blocks) != self.n_parent_blocks:
            raise ValueError(f"these codes have {len(blocks)} nodes holding a leaf, the vocabulary "
                             f"{self.n_parent_blocks}")
        for item, length in enumerate(lengths):
            path = tuple(int(code) for code in codes[item, :length])
            for level in range(length):
                block = blocks.get(path[:level])
                if block is not None:
                    tokens[item, level] = self.parent_base + block * self.branching + path[level]
        return tokens


def code_block(tokens: TokenArray, branching: int) -> TokenArray:
    """Block of `branching` tokens each code token lies in (undefined for special tokens): its level's, or
    past the levels a parent's own. A block's tokens are the alternatives to one another at one trie node."""
    return (tokens - N_SPECIAL) // branching


def code_slot(tokens: TokenArray, branching: int) -> TokenArray:
    """Slot (0 .. branching - 1) of each code token within its block."""
    return (tokens - N_SPECIAL) % branching


def block_start(blocks: TokenArray, branching: int) -> TokenArray:
    """Token id of slot 0 of each block."""
    return N_SPECIAL + blocks * branching


def _checked_codes(codes: np.ndarray, lengths: np.ndarray, branching: int,
                   depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, lengths, inside-the-path mask) as int64, or a ValueError naming what is wrong."""
    codes = np.asarray(codes, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[1] > depth or len(codes) != len(lengths):
        raise ValueError(f"codes must be (n_items, <= {depth}) with one length per item")
    if (lengths < 1).any() or (lengths > codes.shape[1]).any():
        raise ValueError("every item needs a code path of 1..depth codes")
    inside = np.arange(codes.shape[1])[None, :] < lengths[:, None]
    if (codes[inside] < 0).any() or (codes[inside] >= branching).any():
        raise ValueError(f"codes must lie in 0..{branching - 1}")
    return codes, lengths, inside


def _parent_blocks(codes: np.ndarray, lengths: np.ndarray) -> dict[tuple[int, ...], int]:
    """Block number of every node that holds a leaf (its code prefix), in sorted prefix order (deterministic)."""
    parents = {tuple(int(code) for code in codes[item, : length - 1]) for item, length in enumerate(lengths)}
    return {prefix: block for block, prefix in enumerate(sorted(parents))}


def per_parent_vocabulary(codes: np.ndarray, lengths: np.ndarray, branching: int) -> CodeVocabulary:
    """The vocabulary in which every node holding a leaf has its own block of `branching` child tokens.

    A node's children all live in one block (`ChildBlocks`): the level's shared block when none of
    them is a leaf, else the node's own. For two-level codes this is EAGER's released layout: one
    token per (first code, second code) slot, k^2 in all.
    """
    codes, lengths, _ = _checked_codes(codes, lengths, branching, np.asarray(codes).shape[1])
    return CodeVocabulary(branching, codes.shape[1], len(_parent_blocks(codes, lengths)))


def vocabulary_and_tokens(codes: np.ndarray, lengths: np.ndarray, branching: int,
                          per_parent: bool) -> tuple[CodeVocabulary, np.ndarray]:
    """A code table's vocabulary (per-parent last-level blocks, or shared levels) and its items' token paths,
    the parents' blocks worked out once."""
    codes, lengths, inside = _checked_codes(codes, lengths, branching, np.asarray(codes).shape[1])
    if not per_parent:
        vocabulary = CodeVocabulary(branching, codes.shape[1])
        return vocabulary, vocabulary._path_tokens(codes, lengths, inside, {})
    blocks = _parent_blocks(codes, lengths)
    vocabulary = CodeVocabulary(branching, codes.shape[1], len(blocks))
    return vocabulary, vocabulary._path_tokens(codes, lengths, inside, blocks)


class CodeTrie:
    """Prefix trie of item token paths (each ending at END, or at its last token); leaves name items (root: 0)."""

    def __init__(self, tokens: np.ndarray, vocab_size: int) -> None:
        tokens = np.asarray(tokens, dtype=np.int64)
        children: list[dict[int, int]] = [{}]
        leaf_item: dict[int, int] = {}
        for item, path in enumerate(tokens):
            node = 0
            for token in path:
                if token == PAD:
                    break
                if node in leaf_item:
                    raise ValueError(f"item {item}'s path continues past item {leaf_item[node]}'s end")
                child = children[node].get(int(token))
                if child is None:
                    child = len(children)
                    children[node][int(token)] = child
                    children.append({})
                node = child
                if token == END:
                    break
            if node == 0:
                raise ValueError(f"item {item} has an empty token path")
            if node in leaf_item:
                raise ValueError(f"items {leaf_item[node]} and {item} share the code path {path.tolist()}")
            if children[node]:
                raise ValueError(f"item {item}'s path {path.tolist()} is a prefix of another item's")
            leaf_item[node] = item
        self.vocab_size = vocab_size
        self.n_nodes = len(children)
        counts = np.array([len(c) for c in children], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.child_tokens = np.zeros(int(counts.sum()), dtype=np.int64)
        self.child_nodes = np.zeros(int(counts.sum()), dtype=np.int64)
        for node, mapping in enumerate(children):
            start = self.offsets[node]
            for slot, token in enumerate(sorted(mapping)):
                self.child_tokens[start + slot] = token
                self.child_nodes[start + slot] = mapping[token]
        self.edge_keys = np.repeat(np.arange(self.n_nodes), counts) * vocab_size + self.child_tokens
        self.item_of_node = np.full(self.n_nodes, -1, dtype=np.int64)
        for node, item in leaf_item.items():
            self.item_of_node[node] = item
        self.n_items = len(leaf_item)
        self.max_path = int((tokens != PAD).sum(axis=1).max()) if len(tokens) else 0

    def allowed_mask(self, nodes: np.ndarray) -> torch.Tensor:
        """(len(nodes), vocab_size) bool: True where the token extends the node's prefix towards a real item."""
        nodes = np.asarray(nodes, dtype=np.int64)
        counts = self.offsets[nodes + 1] - self.offsets[nodes]
        rows = np.repeat(np.arange(len(nodes)), counts)
        starts = np.repeat(self.offsets[nodes], counts)
        slots = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        mask = torch.zeros(len(nodes), self.vocab_size, dtype=torch.bool)
        mask[torch.from_numpy(rows), torch.from_numpy(self.child_tokens[starts + slots])] = True
        return mask

    def step(self, nodes: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The child of each node along each token; raises if a token leaves the trie."""
        nodes, tokens = np.asarray(nodes, dtype=np.int64), np.asarray(tokens, dtype=np.int64)
        # Edge keys node * vocab + token are sorted (nodes in order, tokens sorted within a node): one search.
        keys = nodes * self.vocab_size + tokens
        slots = np.minimum(np.searchsorted(self.edge_keys, keys), len(self.edge_keys) - 1)
        bad = self.edge_keys[slots] != keys if len(self.edge_keys) else np.ones(len(keys), dtype=bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"token {tokens[row]} does not extend trie node {nodes[row]}")
        return self.child_nodes[slots]

    def is_leaf(self, nodes: np.ndarray) -> np.ndarray:
        """Whether each node is the end of an item's path."""
        return self.item_of_node[np.asarray(nodes, dtype=np.int64)] >= 0

    def child_blocks(self, branching: int) -> ChildBlocks:
        """Each node's block of `branching` slots (the token of slot s is base + s) and the slots its children hold.

        Raises unless every node's children are code tokens of one block, as `per_parent_vocabulary` makes them.
        """
        counts = self.offsets[1:] - self.offsets[:-1]
        if (self.child_tokens < N_SPECIAL).any():
            raise ValueError("child blocks need paths of code tokens only (no END): use per_parent_vocabulary")
        slots = code_slot(self.child_tokens, branching)
        edge_bases = self.child_tokens - slots
        owners = np.repeat(np.arange(self.n_nodes), counts)
        base = np.full(self.n_nodes, -1, dtype=np.int64)
        base[owners] = edge_bases  # any edge's; checked below
        if (base[owners] != edge_bases).any():
            node = int(owners[np.flatnonzero(base[owners] != edge_bases)[0]])
            raise ValueError(f"trie node {node}'s children lie in more than one block of {branching} tokens")
        mask = torch.zeros(self.n_nodes, branching, dtype=torch.bool)
        mask[torch.from_numpy(owners), torch.from_numpy(slots)] = True
        return ChildBlocks(base=base, mask=mask, branching=branching)


@dataclass(frozen=True)
class ChildBlocks:
    """Per trie node, the token id of its children's block's slot 0 (-1 at leaves) and which slots are children."""

    base: np.ndarray  # (n_nodes,) int64
    mask: torch.Tensor  # (n_nodes, branching) bool
    branching: int

    def slots(self, tokens: torch.Tensor) -> torch.Tensor:
        """The slot of each code token within its block."""
        return code_slot(tokens, self.branching)


# step(prefixes (n_queries * width, t) int64, width, parents) -> next-token logits (rows, vocab_size), any
# scale that log_softmax accepts (log-probabilities included). Rows are query-major: rows q * width ..
# (q + 1) * width - 1 are the beams of query q, so a model can read each query's encoding once for all
# of its beams. `parents[r]` is the row of the previous call's prefixes that row r extends (None on the
# first call), so a model may keep state per row (a key/value cache) across calls.
StepFn = Callable[[torch.Tensor, int, torch.Tensor | None], torch.Tensor]
# With `ChildBlocks`: step(prefixes, width, parents, bases) -> logits (rows, branching) over each row's block,
# whose slot 0 is token bases[r] (the search masks the slots that are not children).
BlockStepFn = Callable[[torch.Tensor, int, torch.Tensor | None, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BeamResult:
    """Per query, the beam's items (best first, -1 where fewer were found) and their path log-probabilities."""

    items: np.ndarray  # (n_queries, beam_size) int64
    log_probs: np.ndarray  # (n_queries, beam_size) float32, -inf where items is -1


@torch.no_grad()
def constrained_beam_search(step: StepFn | BlockStepFn, trie: CodeTrie, n_queries: int, beam_size: int,
                            blocks: ChildBlocks | None = None) -> BeamResult:
    """The `beam_size` most probable complete item paths per query, every step restricted to the trie.

    With `blocks`, `step` is a `BlockStepFn` and each step ranks only the rows' blocks of slots.
    """
    if beam_size < 1:
        raise ValueError("beam_size must be at least 1")
    prefixes = torch.full((n_queries, 1), SOS, dtype=torch.int64)
    since_call: torch.Tensor | None = None  # per row, the row it descends from at the last step call
    nodes = np.zeros(n_queries, dtype=np.int64)
    scores = torch.zeros(n_queries)
    width = 1  # beams per query so far
    for _ in range(trie.max_path):
        finished = trie.is_leaf(nodes)
        if finished.all():
            break
        # Candidates: every token (vocabulary space) or each row's block of slots; leaves allow none.
        allowed = trie.allowed_mask(nodes) if blocks is None else blocks.mask[torch.from_numpy(nodes)]
        # The model's next-token distribution renormalised over the tokens that lead to a real item, so a
        # path's score is its item's log-probability under the constrained model, and a forced move (one
        # allowed token, e.g. END after a last code) costs nothing: when every beam is forced, skip the model.
        if (allowed.sum(dim=1)[torch.from_numpy(~finished)] == 1).all():
            candidates = torch.where(allowed, torch.tensor(0.0), torch.tensor(float("-inf")))
        else:
            raw = (step(prefixes, width, since_call) if blocks is None  # type: ignore[call-arg]
                   else step(prefixes, width, since_call, torch.from_numpy(blocks.base[nodes])))  # type: ignore[call-arg]
            logits = torch.where(allowed, raw.float().cpu(), torch.tensor(float("-inf")))
            since_call = torch.arange(len(prefixes))
            candidates = torch.log_softmax(logits, dim=1)
            candidates[~allowed.any(dim=1)] = float("-inf")  # finished rows: no allowed token (NaN otherwise)
        # A finished beam carries on unchanged (through PAD, or slot 0 of no block) at no cost, competing on
        # its total score.
        done = torch.from_numpy(finished)
        candidates[done] = float("-inf")
        candidates[done, PAD] = 0.0
        space = candidates.shape[1]
        totals = (scores.unsqueeze(1) + candidates).view(n_queries, width * space)
        k = min(beam_size, totals.shape[1])
        top_scores, top_index = totals.topk(k, dim=1)
        beam_of, choice_of = top_index // space, top_index % space
        parent = (torch.arange(n_queries).unsqueeze(1) * width + beam_of).reshape(-1)
        parent_nodes = nodes[parent.numpy()]
        tokens = choice_of.reshape(-1)
        if blocks is not None:
            bases = torch.from_numpy(blocks.base[parent_nodes])
            tokens = torch.where(bases >= 0, bases + tokens, torch.full_like(tokens, PAD))
        alive = torch.isfinite(top_scores).reshape(-1).numpy()
        next_nodes = parent_nodes.copy()  # dead rows stay where they were; their score is -inf anyway
        moving = alive & ~trie.is_leaf(parent_nodes)
        next_nodes[moving] = trie.step(parent_nodes[moving], tokens.numpy()[moving])
        prefixes = torch.cat([prefixes[parent], tokens.unsqueeze(1)], dim=1)
        if since_call is not None:
            since_call = since_call[parent]
        nodes, scores, width = next_nodes, top_scores.reshape(-1), k
    items = np.where(np.isfinite(scores.numpy()), trie.item_of_node[nodes], -1).reshape(n_queries, width)
    log_probs = scores.numpy().reshape(n_queries, width).astype(np.float32)
    log_probs[items < 0] = -np.inf
    if width < beam_size:  # fewer items in the trie than the beam: pad
        items = np.pad(items, ((0, 0), (0, beam_size - width)), constant_values=-1)
        log_probs = np.pad(log_probs, ((0, 0), (0, beam_size - width)), constant_values=-np.inf)
    return BeamResult(items=items, log_probs=log_probs)


def merge_by_confidence(results: list[BeamResult]) -> list[list[tuple[int, float]]]:
    """Per query, the items of every stream's beam ranked by path log-probability, an item kept once (its best)."""
    if not results:
        raise ValueError("nothing to merge")
    merged: list[list[tuple[int, float]]] = []
    items = np.concatenate([result.items for result in results], axis=1)
    log_probs = np.concatenate([result.log_probs for result in results], axis=1)
    for row_items, row_scores in zip(items, log_probs, strict=True):
        order = np.argsort(-row_scores, kind="stable")  # ties: the earlier stream, then the earlier beam
        seen: set[int] = set()
        ranked: list[tuple[int, float]] = []
        for column in order:
            item = int(row_items[column])
            if item >= 0 and item not in seen:
                seen.add(item)
                ranked.append((item, float(row_scores[column])))
        merged.append(ranked)
    return merged


def full_ranking_scores(ranked: list[list[tuple[int, float]]], n_items: int) -> torch.Tensor:
    """(n_queries, n_items + 1) scores for the shared evaluator: beam items first in merged order, the rest tied below.

    Item i (0-based) is column i + 1; column 0 is padding. Beam items get n_items - position, every
    other item 0, so the evaluator's ties-against-the-model rule ranks a missed target below every
    other unranked item, as for any model that cannot tell them apart.
    """
    scores = torch.zeros(len(ranked), n_items + 1)
    for row, items in enumerate(ranked):
        if items:
            columns = torch.tensor([item + 1 for item, _ in items])
            scores[row, columns] = torch.arange(n_items, n_items - len(items), -1, dtype=torch.float32)
    scores[:, 0] = float("-inf")
    return scores
