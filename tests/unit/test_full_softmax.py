"""The fused full-softmax cross-entropy equals autograd's cross-entropy in value and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ml.train.full_softmax import full_softmax_cross_entropy


def _inputs(seed: int, positions: int = 37, items: int = 53, dim: int = 8):
    generator = torch.Generator().manual_seed(seed)
    hidden = (3 * torch.randn(positions, dim, generator=generator, dtype=torch.float64)).requires_grad_()
    table = torch.randn(items, dim, generator=generator, dtype=torch.float64).requires_grad_()
    targets = torch.randint(0, items, (positions,), generator=generator)
    offset = torch.randn(items, generator=generator, dtype=torch.float64)
    return hidden, table, targets, offset


@pytest.mark.parametrize("with_offset", [False, True])
def test_value_and_gradients_match_cross_entropy(with_offset: bool) -> None:
    hidden, table, targets, offset = _inputs(0)
    offset = offset if with_offset else None
    weight = 0.37  # a non-unit upstream gradient (the loss is divided by the positions per batch)
    fused = full_softmax_cross_entropy(hidden, table, targets, offset)
    (weight * fused).backward()
    fused_grads = hidden.grad.clone(), table.grad.clone()
    hidden.grad = table.grad = None
    logits = hidden @ table.T + (0 if offset is None else offset)
    reference = F.cross_entropy(logits, targets, reduction="sum")
    (weight * reference).backward()
    torch.testing.assert_close(fused, reference)
    torch.testing.assert_close(fused_grads[0], hidden.grad)
    torch.testing.assert_close(fused_grads[1], table.grad)


def test_large_logits_do_not_overflow() -> None:
    hidden, table, targets, _ = _inputs(1)
    with torch.no_grad():
        hidden *= 400  # logits in the thousands: a naive exp overflows
    loss = full_softmax_cross_entropy(hidden.float(), table.float(), targets)
    reference = F.cross_entropy(hidden.float() @ table.float().T, targets, reduction="sum")
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-2)


def test_gradcheck() -> None:
    hidden, table, targets, offset = _inputs(2, positions=5, items=7, dim=3)
    assert torch.autograd.gradcheck(lambda h, t: full_softmax_cross_entropy(h, t, targets, offset), (hidden, table))


def test_shapes_are_checked() -> None:
    hidden, table, targets, offset = _inputs(3)
    with pytest.raises(ValueError, match="targets"):
        full_softmax_cross_entropy(hidden, table, targets[:-1])
    with pytest.raises(ValueError, match="offset"):
        full_softmax_cross_entropy(hidden, table, targets, offset[:-1])
    with pytest.raises(ValueError, match="must be"):
        full_softmax_cross_entropy(hidden, table[:, :-1], targets)


def test_a_reused_logit_buffer_gives_the_same_loss_and_guards_earlier_batches() -> None:
    from ml.train.full_softmax import LogitBuffer

    buffer = LogitBuffer()
    hidden, table, targets, offset = _inputs(4)
    plain = full_softmax_cross_entropy(hidden, table, targets, offset)
    first = full_softmax_cross_entropy(hidden, table, targets, offset, buffer)
    torch.testing.assert_close(first, plain)
    first.backward()  # its own backward, before the buffer is reused: fine
    grads = hidden.grad.clone()
    hidden.grad = table.grad = None
    plain.backward()
    torch.testing.assert_close(grads, hidden.grad)
    # A smaller second batch reuses the first one's buffer; the first batch's saved softmax is then gone.
    earlier = full_softmax_cross_entropy(hidden, table, targets, offset, buffer)
    later = full_softmax_cross_entropy(hidden[:20], table, targets[:20], offset, buffer)
    later.backward()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        earlier.backward()
