"""Decoder blocks: beams grouped per user read the same keys and values as replicated memory; causality; padding."""

import pytest
import torch

from ml.models.code_decoder import CodeDecoderStack, SelfAttentionCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stack() -> CodeDecoderStack:
    torch.manual_seed(0)
    return CodeDecoderStack(n_layers=2, dim=16, heads=4, feedforward=32, dropout=0.0).eval()


def test_grouped_beams_equal_replicated_memory() -> None:
    stack = _stack()
    users, beams, length = 3, 4, 5
    memory = torch.randn(users, length, 16)
    padding = torch.zeros(users, length, dtype=torch.bool)
    padding[1, :2] = True  # left padding of one user's history
    x = torch.randn(users * beams, 3, 16)
    grouped = stack(x, stack.memory_kv(memory), padding, group=beams)
    replicated_memory = memory.repeat_interleave(beams, dim=0)
    replicated = stack(x, stack.memory_kv(replicated_memory), padding.repeat_interleave(beams, dim=0), group=1)
    torch.testing.assert_close(grouped, replicated, rtol=1e-5, atol=1e-5)


def test_self_attention_is_causal_and_padded_memory_is_ignored() -> None:
    stack = _stack()
    memory = torch.randn(2, 4, 16)
    padding = torch.tensor([[True, False, False, False]] * 2)
    x = torch.randn(2, 3, 16)
    changed = x.clone()
    changed[:, 2] += 1.0  # a later token must not change earlier outputs
    base = stack(x, stack.memory_kv(memory), padding)
    torch.testing.assert_close(stack(changed, stack.memory_kv(memory), padding)[:, :2], base[:, :2])
    other = memory.clone()
    other[:, 0] += 5.0  # a padded memory position must not change anything
    torch.testing.assert_close(stack(x, stack.memory_kv(other), padding), base)
    # With key padding (bidirectional mode), a padded token changes no real output.
    key_padding = torch.tensor([[False, False, True]] * 2)
    bidirectional = stack(x, stack.memory_kv(memory), padding, key_padding=key_padding)
    torch.testing.assert_close(stack(changed, stack.memory_kv(memory), padding, key_padding=key_padding)[:, :2],
                               bidirectional[:, :2])


def test_incremental_decoding_with_the_cache_equals_the_full_pass() -> None:
    stack = _stack()
    users, beams = 2, 3
    memory = torch.randn(users, 4, 16)
    padding = torch.zeros(users, 4, dtype=torch.bool)
    kv = stack.memory_kv(memory)
    x = torch.randn(users * beams, 4, 16)
    full = stack(x, kv, padding, group=beams)
    cache = SelfAttentionCache(len(stack.blocks))
    first = stack(x[:, :1], kv, padding, group=beams, cache=cache)  # one position, then two at once, then one
    second = stack(x[:, 1:3], kv, padding, group=beams, cache=cache)
    # Re-ranked beams: each row continues another row's prefix; the cache follows its parent.
    parents = torch.tensor([2, 0, 1, 5, 3, 4])
    cache.reorder(parents)
    moved = torch.cat([x[parents, :3], x[:, 3:]], dim=1)
    third = stack(moved[:, 3:], kv, padding, group=beams, cache=cache)
    torch.testing.assert_close(torch.cat([first, second], dim=1), full[:, :3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(third, stack(moved, kv, padding, group=beams)[:, 3:], rtol=1e-5, atol=1e-5)
    assert cache.length == 4
