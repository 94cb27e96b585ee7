"""Code paths as tokens, the prefix trie, constrained beam search, the confidence merge and full-ranking scores."""

import itertools

import numpy as np
import pytest
import torch

from ml.codes.trie import (
    END,
    N_SPECIAL,
    PAD,
    BeamResult,
    CodeTrie,
    CodeVocabulary,
    constrained_beam_search,
    full_ranking_scores,
    merge_by_confidence,
)
from ml.evaluate.ranking import ranks_from_scores

# Paths of different depths: items 0-2 share the first code, item 3 is alone at depth 1.
CODES = np.array([[0, 0, -1], [0, 1, 0], [0, 1, 1], [2, -1, -1], [1, 2, -1]])
VOCAB = CodeVocabulary(branching=3, depth=3)


def _trie() -> CodeTrie:
    return CodeTrie(VOCAB.item_tokens(CODES, (CODES >= 0).sum(axis=1)), VOCAB.size)


def _all_token_paths(trie: CodeTrie) -> set[tuple[int, ...]]:
    paths, stack = set(), [(0, ())]
    while stack:
        node, prefix = stack.pop()
        if trie.is_leaf(np.array([node]))[0]:
            paths.add(prefix)
        for slot in range(trie.offsets[node], trie.offsets[node + 1]):
            stack.append((int(trie.child_nodes[slot]), prefix + (int(trie.child_tokens[slot]),)))
    return paths


def test_tokens_carry_the_level_and_end_every_path() -> None:
    tokens = VOCAB.item_tokens(CODES, (CODES >= 0).sum(axis=1))
    assert tokens[0].tolist() == [N_SPECIAL + 0, N_SPECIAL + 3 + 0, END, PAD]
    assert tokens[3].tolist() == [N_SPECIAL + 2, END, PAD, PAD]
    # The same code value at different levels is a different token.
    assert tokens[1].tolist() == [N_SPECIAL + 0, N_SPECIAL + 3 + 1, N_SPECIAL + 6 + 0, END]
    with pytest.raises(ValueError, match="0..2"):
        VOCAB.item_tokens(np.array([[3, -1, -1]]), np.array([1]))


def test_trie_admits_exactly_the_real_items_paths() -> None:
    trie = _trie()
    tokens = VOCAB.item_tokens(CODES, (CODES >= 0).sum(axis=1))
    expected = {tuple(int(t) for t in row if t != PAD) for row in tokens}
    assert _all_token_paths(trie) == expected and trie.n_items == len(CODES)
    root_allowed = trie.allowed_mask(np.array([0]))[0]
    assert set(torch.nonzero(root_allowed).flatten().tolist()) == {N_SPECIAL + 0, N_SPECIAL + 1, N_SPECIAL + 2}
    with pytest.raises(ValueError, match="does not extend"):
        trie.step(np.array([0]), np.array([END]))


def test_trie_refuses_shared_paths() -> None:
    codes = np.array([[0, 1], [0, 1]])
    with pytest.raises(ValueError, match="share the code path"):
        CodeTrie(CodeVocabulary(2, 2).item_tokens(codes, np.array([2, 2])), CodeVocabulary(2, 2).size)


def _random_step(seed: int):  # noqa: ANN202 - a StepFn
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(64, VOCAB.size, generator=generator)

    def step(prefixes: torch.Tensor, width: int, parents: torch.Tensor | None = None) -> torch.Tensor:
        # Deterministic in (owner, prefix): a hash of the prefix picks a row of a random table.
        owners = torch.arange(len(prefixes)) // width
        keys = (owners * 7 + prefixes.sum(dim=1) * 3 + prefixes.shape[1]) % len(table)
        return torch.log_softmax(table[keys], dim=-1)

    return step


def _path_log_prob(step, trie: CodeTrie, owner: int, tokens: list[int]) -> float:  # noqa: ANN001
    """Log-probability of a token path under the model renormalised over each node's allowed tokens."""
    from ml.codes.trie import SOS

    prefix, total, node = [SOS], 0.0, np.array([0])
    for token in tokens:
        allowed = trie.allowed_mask(node)[0]
        logits = step(torch.tensor([prefix] * (owner + 1)), 1)[owner]
        total += float(torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=0)[token])
        prefix.append(token)
        node = trie.step(node, np.array([token]))
    return total


@pytest.mark.parametrize("beam_size", [1, 3, 5, 8])
def test_beam_search_emits_only_real_items_and_exact_top_paths(beam_size: int) -> None:
    trie = _trie()
    step = _random_step(seed=beam_size)
    result = constrained_beam_search(step, trie, n_queries=4, beam_size=beam_size)
    tokens = VOCAB.item_tokens(CODES, (CODES >= 0).sum(axis=1))
    for owner in range(4):
        exact = sorted(((_path_log_prob(step, trie, owner, [int(t) for t in row if t != PAD]), item)
                        for item, row in enumerate(tokens)), reverse=True)
        found = [item for item in result.items[owner] if item >= 0]
        assert len(set(found)) == len(found) and all(0 <= item < len(CODES) for item in found)
        assert len(found) == min(beam_size, len(CODES))
        np.testing.assert_allclose(result.log_probs[owner][: len(found)],
                                   [_path_log_prob(step, trie, owner, [int(t) for t in tokens[item] if t != PAD])
                                    for item in found], rtol=1e-5)
        # Best first; a beam as wide as the catalogue never prunes, so it is the exact ranking.
        assert (np.diff(result.log_probs[owner][: len(found)]) <= 0).all()
        if beam_size >= len(CODES):
            assert found == [item for _, item in exact]


def test_beam_search_follows_a_model_that_knows_the_answer() -> None:
    trie = _trie()
    tokens = VOCAB.item_tokens(CODES, (CODES >= 0).sum(axis=1))
    answers = [4, 1]  # query 0 wants item 4, query 1 wants item 1

    def step(prefixes: torch.Tensor, width: int, parents: torch.Tensor | None = None) -> torch.Tensor:
        logits = torch.zeros(len(prefixes), VOCAB.size)
        owners = (torch.arange(len(prefixes)) // width).tolist()
        for row, (prefix, owner) in enumerate(zip(prefixes.tolist(), owners, strict=True)):
            path = [int(t) for t in tokens[answers[owner]] if t != PAD]
            depth = len(prefix) - 1
            if depth < len(path) and prefix[1:] == path[:depth]:
                logits[row, path[depth]] = 10.0
        return torch.log_softmax(logits, dim=-1)

    result = constrained_beam_search(step, trie, n_queries=2, beam_size=3)
    assert result.items[:, 0].tolist() == answers


def test_forced_moves_skip_the_model_and_cost_nothing() -> None:
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])  # every path: two codes, then a forced END
    vocabulary = CodeVocabulary(branching=2, depth=2)
    trie = CodeTrie(vocabulary.item_tokens(codes, np.array([2, 2, 2, 2])), vocabulary.size)
    calls = []

    def step(prefixes: torch.Tensor, width: int, parents: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(prefixes.shape[1])
        return torch.zeros(len(prefixes), vocabulary.size)  # uniform: every item has probability 1/4

    result = constrained_beam_search(step, trie, n_queries=2, beam_size=4)
    assert calls == [1, 2]  # the END step is forced for every beam
    np.testing.assert_allclose(result.log_probs, np.log(0.25), rtol=1e-6)
    assert sorted(result.items[0].tolist()) == [0, 1, 2, 3]


def test_merge_ranks_by_log_probability_and_keeps_an_item_once() -> None:
    behaviour = BeamResult(items=np.array([[3, 1, -1]]), log_probs=np.array([[-0.5, -2.0, -np.inf]], np.float32))
    semantic = BeamResult(items=np.array([[1, 4, 0]]), log_probs=np.array([[-0.1, -1.0, -3.0]], np.float32))
    assert merge_by_confidence([behaviour, semantic]) == [[(1, pytest.approx(-0.1)), (3, -0.5), (4, -1.0),
                                                           (0, -3.0)]]


def test_full_ranking_puts_beam_items_first_and_ties_the_rest_below() -> None:
    n_items = 6
    scores = full_ranking_scores([[(4, -0.1), (0, -0.7)], []], n_items)
    ranks = ranks_from_scores(scores, [5, 1])
    assert ranks.tolist() == [1, n_items]  # item 4 is column 5; an empty beam ranks its target last
    others = ranks_from_scores(scores, [1, 2])
    assert others[0] == 2
    # Every item outside the beam ties with the rest, so a missed target ranks last (ties against the model).
    for target in (2, 3, 4, 6):
        assert ranks_from_scores(scores[:1], [target])[0] == n_items
    assert list(itertools.islice(scores[0, 1:].tolist(), 0, None)).count(0.0) == n_items - 2
