"""Per-parent last-level tokens: the vocabulary, child blocks, block-space beam search, and EAGER decoding with them."""

import numpy as np
import pytest
import torch

from ml.codes.trie import (
    END,
    N_SPECIAL,
    PAD,
    SOS,
    CodeTrie,
    CodeVocabulary,
    block_start,
    code_block,
    code_slot,
    constrained_beam_search,
    per_parent_vocabulary,
    vocabulary_and_tokens,
)
from ml.models.code_decoder import SelfAttentionCache
from ml.models.eager import EAGER, EAGERConfig
from ml.models.sasrec import left_pad
from ml.train.eager_loss import eager_losses
from ml.train.eager_training import train_eager
from tests.unit.test_eager import N_ITEMS, TINY, _cycle_data, _streams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Paths of different depths, and a root that holds a leaf (item 3) beside inner nodes.
CODES = np.array([[0, 0, -1], [0, 1, 0], [0, 1, 1], [2, -1, -1], [1, 2, -1]])
LENGTHS = (CODES >= 0).sum(axis=1)
K = 3
BASE = N_SPECIAL + 3 * K  # the first per-parent block, after three level blocks


def _vocabulary_and_trie() -> tuple[CodeVocabulary, np.ndarray, CodeTrie]:
    vocabulary = per_parent_vocabulary(CODES, LENGTHS, K)
    tokens = vocabulary.item_tokens(CODES, LENGTHS)
    return vocabulary, tokens, CodeTrie(tokens, vocabulary.size)


@pytest.mark.parametrize("per_parent", [True, False])
def test_vocabulary_and_tokens_agree_with_the_vocabulary_built_apart(per_parent: bool) -> None:
    vocabulary, tokens = vocabulary_and_tokens(CODES, LENGTHS, K, per_parent=per_parent)
    expected = per_parent_vocabulary(CODES, LENGTHS, K) if per_parent else CodeVocabulary(K, 3)
    assert vocabulary == expected
    assert np.array_equal(tokens, expected.item_tokens(CODES, LENGTHS))


def test_block_arithmetic_names_each_code_tokens_block_and_slot_in_numpy_and_torch() -> None:
    _, tokens, trie = _vocabulary_and_trie()
    codes = tokens[tokens != PAD]
    for array in (codes, torch.from_numpy(codes)):
        blocks, slots = code_block(array, K), code_slot(array, K)
        assert (block_start(blocks, K) + slots == array).all()
        assert ((0 <= slots) & (slots < K)).all()
    # A per-parent token's block is the one its parent's ChildBlocks base names.
    child_blocks = trie.child_blocks(K)
    assert set(code_block(child_blocks.base[child_blocks.base >= 0], K).tolist()) <= set(code_block(codes, K).tolist())
    assert code_block(np.array([BASE - 1, BASE, BASE + K]), K).tolist() == [2, 3, 4]


def test_every_node_holding_a_leaf_gets_its_own_block_and_paths_carry_no_end() -> None:
    vocabulary, tokens, trie = _vocabulary_and_trie()
    # Nodes holding a leaf, in sorted prefix order: (), (0,), (0, 1), (1,) -> blocks 0..3.
    assert vocabulary.n_parent_blocks == 4 and vocabulary.size == BASE + 4 * K
    assert tokens.tolist() == [
        [BASE + 0, BASE + 3 + 0, PAD, PAD],          # root block, then (0,)'s block
        [BASE + 0, BASE + 3 + 1, BASE + 6 + 0, PAD],  # (0, 1)'s block at the third level
        [BASE + 0, BASE + 3 + 1, BASE + 6 + 1, PAD],
        [BASE + 2, PAD, PAD, PAD],                    # a leaf at the root
        [BASE + 1, BASE + 9 + 2, PAD, PAD],
    ]
    assert not (tokens == END).any() and trie.n_items == len(CODES)
    blocks = trie.child_blocks(K)
    root, first = 0, int(trie.step(np.array([0]), np.array([BASE]))[0])
    assert blocks.base[root] == BASE and blocks.mask[root].tolist() == [True, True, True]
    assert blocks.base[first] == BASE + 3 and blocks.mask[first].tolist() == [True, True, False]
    leaves = np.flatnonzero(trie.item_of_node >= 0)
    assert (blocks.base[leaves] == -1).all() and not blocks.mask[leaves].any()
    # The same code at the same level under two parents is two tokens: the last level names its item.
    assert len({int(row[(row != PAD).sum() - 1]) for row in tokens}) == len(CODES)


def test_two_level_codes_get_the_authors_k_squared_layout() -> None:
    codes = np.array([[c1, c2] for c1 in range(K) for c2 in range(K)])
    vocabulary = per_parent_vocabulary(codes, np.full(len(codes), 2), K)
    tokens = vocabulary.item_tokens(codes, np.full(len(codes), 2))
    # Level one is the level's own block; level two is token c1 * k + c2 past the level blocks.
    assert (tokens[:, 0] == N_SPECIAL + codes[:, 0]).all()
    assert (tokens[:, 1] == N_SPECIAL + 2 * K + codes[:, 0] * K + codes[:, 1]).all()


def test_the_trie_refuses_a_path_that_is_a_prefix_of_another_and_blocks_refuse_mixed_children() -> None:
    for rows in ([[7, PAD], [7, 8]], [[7, 8], [7, PAD]]):
        with pytest.raises(ValueError, match="prefix of another|continues past"):
            CodeTrie(np.array(rows), 20)
    shared = CodeVocabulary(K, 3)
    with pytest.raises(ValueError, match="no END"):
        CodeTrie(shared.item_tokens(CODES, LENGTHS), shared.size).child_blocks(K)
    with pytest.raises(ValueError, match="nodes holding a leaf"):
        CodeVocabulary(K, 3, n_parent_blocks=2).item_tokens(CODES, LENGTHS)


def _random_block_step(seed: int, width_table: int = 64):  # noqa: ANN202 - a BlockStepFn
    table = torch.randn(width_table, K, generator=torch.Generator().manual_seed(seed))

    def step(prefixes: torch.Tensor, width: int, parents: torch.Tensor | None,
             bases: torch.Tensor) -> torch.Tensor:
        # Deterministic in (owner, prefix): a hash of the prefix picks a row of a random table.
        owners = torch.arange(len(prefixes)) // width
        keys = (owners * 7 + prefixes.sum(dim=1) * 3 + prefixes.shape[1]) % len(table)
        return table[keys]

    return step


def _path_log_prob(step, trie: CodeTrie, owner: int, path: list[int]) -> float:  # noqa: ANN001
    """Log-probability of a token path, each step's block logits renormalised over the node's children."""
    blocks = trie.child_blocks(K)
    prefix, total, node = [SOS], 0.0, 0
    for token in path:
        logits = step(torch.tensor([prefix] * (owner + 1)), 1, None,
                      torch.tensor([blocks.base[node]] * (owner + 1)))[owner]
        log_probs = torch.log_softmax(logits.masked_fill(~blocks.mask[node], float("-inf")), dim=0)
        total += float(log_probs[token - blocks.base[node]])
        prefix.append(token)
        node = int(trie.step(np.array([node]), np.array([token]))[0])
    return total


@pytest.mark.parametrize("beam_size", [1, 2, 5, 8])
def test_block_beam_search_emits_only_real_items_with_their_exact_scores(beam_size: int) -> None:
    _, tokens, trie = _vocabulary_and_trie()
    step = _random_block_step(seed=beam_size)
    result = constrained_beam_search(step, trie, n_queries=4, beam_size=beam_size, blocks=trie.child_blocks(K))
    paths = [[int(t) for t in row if t != PAD] for row in tokens]
    for owner in range(4):
        found = [int(item) for item in result.items[owner] if item >= 0]
        assert len(set(found)) == len(found) == min(beam_size, len(CODES))
        np.testing.assert_allclose(result.log_probs[owner][: len(found)],
                                   [_path_log_prob(step, trie, owner, paths[item]) for item in found], rtol=1e-5)
        if beam_size >= len(CODES):  # no pruning: the exact ranking of every item
            exact = sorted(((_path_log_prob(step, trie, owner, path), item) for item, path in enumerate(paths)),
                           reverse=True)
            assert found == [item for _, item in exact]


def test_eager_per_parent_decodes_only_valid_items_and_its_scores_are_the_paths_likelihoods() -> None:
    data = _cycle_data()
    model = train_eager(data, _streams(), EAGERConfig(**{**TINY, "last_level": "per_parent", "max_epochs": 3}
                                                      )).model.eval()
    histories = data.history("valid")[0][:8]
    memory, padding = model.encode(left_pad(histories, model.max_len))
    for stream, decoder in model.decoders.items():
        assert stream in model.blocks
        kv, cache = decoder.stack.memory_kv(memory), SelfAttentionCache(len(decoder.stack.blocks))

        def step(prefixes, width, parents, bases, decoder=decoder, kv=kv, cache=cache):  # noqa: ANN001, ANN202
            if parents is not None:
                cache.reorder(parents)
            return decoder.block_logits(decoder(prefixes, kv, padding, group=width, cache=cache)[:, -1], bases)

        # A beam as wide as the catalogue: every item exactly once, each at its own path's likelihood.
        beam = constrained_beam_search(step, model.tries[stream], len(histories), N_ITEMS, model.blocks[stream])
        assert all(sorted(row.tolist()) == list(range(N_ITEMS)) for row in beam.items)
        np.testing.assert_allclose(model.path_log_probs(stream, memory, padding, beam.items), beam.log_probs,
                                   atol=1e-4)
        # The constrained model is a distribution over the items.
        np.testing.assert_allclose(np.exp(beam.log_probs).sum(axis=1), 1.0, atol=1e-4)
    for merge in ("confidence", "rerank"):
        model.config = EAGERConfig(**{**TINY, "last_level": "per_parent", "merge": merge})
        for row in model.recommend(histories, beam_size=3):
            items = [item for item, _ in row]
            assert len(set(items)) == len(items) and all(0 <= item < N_ITEMS for item in items)


def test_per_parent_generation_loss_is_the_paths_negative_log_likelihood() -> None:
    model = EAGER(N_ITEMS, _streams(), EAGERConfig(**{**TINY, "last_level": "per_parent", "gct_weight": 0.0,
                                                      "stt_weight": 0.0}))
    model.eval()
    histories = torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5]])
    targets = torch.tensor([3, 6])
    losses = eager_losses(model, histories, targets, 1, torch.Generator().manual_seed(0))
    memory, padding = model.encode(histories)
    expected = 0.0
    for stream in model.decoders:
        log_probs = model.path_log_probs(stream, memory, padding, (targets - 1).numpy()[:, None])
        assert losses.terms[f"gen_{stream}"] == pytest.approx(-float(log_probs.sum()), rel=1e-5)
        expected -= float(log_probs.sum())
    assert float(losses.total.detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("grad", [True, False])
def test_block_logits_are_each_rows_products_with_its_own_block(grad: bool) -> None:
    model = EAGER(N_ITEMS, _streams(), EAGERConfig(**{**TINY, "last_level": "per_parent"}))
    decoder = model.decoders["behaviour"]
    blocks = model.blocks["behaviour"]
    bases = torch.from_numpy(blocks.base[blocks.base >= 0]).repeat(3)[torch.randperm(3 * int((blocks.base >= 0).sum()),
                                                                                   generator=torch.Generator()
                                                                                   .manual_seed(0))]
    hidden = torch.randn(len(bases), TINY["hidden_dim"], generator=torch.Generator().manual_seed(1))
    slots = torch.arange(blocks.branching)
    expected = torch.einsum("nd,nkd->nk", hidden, decoder.token_embedding.weight[bases.unsqueeze(1) + slots])
    with torch.set_grad_enabled(grad):
        logits = decoder.block_logits(hidden, bases)
    torch.testing.assert_close(logits, expected)
    if grad:  # the table's gradient reaches exactly the blocks' rows
        logits.sum().backward()
        touched = decoder.token_embedding.weight.grad.abs().sum(dim=1) > 0
        assert set(torch.nonzero(touched).flatten().tolist()) == set((bases.unsqueeze(1) + slots).flatten().tolist())
