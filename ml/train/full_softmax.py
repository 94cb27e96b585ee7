"""Full-softmax cross-entropy over a whole item table, fused so the (positions, items) matrix is touched few times.

The SASRec-family loss is a softmax over every item at every real position: on amazon-beauty about
1,750 positions x 12,101 items per batch, an 85 MB logit matrix. Written as `hidden @ table.T`
followed by `F.cross_entropy`, autograd keeps the logits and the log-probabilities, fills a
zero matrix for the NLL's gradient and reads three matrices again in the log-softmax's backward:
about eight passes over 85 MB, and on 2 CPU cores those memory-bound passes cost about a third of a
training step (the three matrix products are the rest). Here the forward turns the logits into
probabilities in place (shift by the row max, exp, normalise) and the backward runs the two products
and takes the targets' one-hot part off them: the same loss and gradients up to float rounding, in
about three passes, and one matrix kept instead of two.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable


class LogitBuffer:
    """One (rows, items) float matrix that successive batches' logits are written into.

    A fresh 85 MB matrix per step costs about 25 ms on these 2 cores (the kernel maps and zeroes every
    page), a third of the logit product itself; reusing one buffer skips that. A batch's logits stay
    saved for its backward; the next batch's forward overwrites them, which bumps the buffer's version
    counter, so calling backward on an earlier batch's loss after that raises instead of using
    overwritten values.
    """

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def take(self, rows: int, columns: int, like: torch.Tensor) -> torch.Tensor:
        """A (rows, columns) view of the buffer, with `like`'s dtype and device (grown when too small)."""
        buffer = self._buffer
        if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != columns or buffer.dtype != like.dtype \
                or buffer.device != like.device:
            # A quarter of headroom: batches cut by positions vary a little in size.
            buffer = torch.empty((rows + rows // 4, columns), dtype=like.dtype, device=like.device)
            self._buffer = buffer
        return buffer[:rows]


class _FullSoftmaxCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of softmax(hidden @ items.T + offset) at `targets`; gradients for hidden and items."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                offset: torch.Tensor | None, buffer: LogitBuffer | None) -> torch.Tensor:
        if buffer is None:
            logits = hidden @ items.T
        else:
            logits = torch.mm(hidden, items.T, out=buffer.take(len(hidden), len(items), hidden))
        if offset is not None:
            logits += offset
        target_logits = logits.gather(1, targets[:, None]).squeeze(1)
        # Softmax in place (the logits are not needed again): shift by the row max, exp, normalise.
        row_max = logits.amax(dim=1)
        probabilities = logits.sub_(row_max[:, None]).exp_()
        row_sum = probabilities.sum(dim=1)
        probabilities.div_(row_sum[:, None])
        loss = (row_max + row_sum.log() - target_logits).sum()
        ctx.save_for_backward(hidden, items, targets, probabilities)
        return loss

    @staticmethod
    @once_differentiable  # a double backward raises instead of treating the softmax as a constant
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, items, targets, probabilities = ctx.saved_tensors
        # d loss / d logits = softmax - one-hot(target). The one-hot part is applied to the products
        # (a row gather and a scatter-add of P x d) so the saved matrix stays as it is: backward can rerun.
        grad_hidden = grad_items = None
        if ctx.needs_input_grad[0]:
            grad_hidden = (probabilities @ items).sub_(items[targets]).mul_(grad_loss)
        if ctx.needs_input_grad[1]:
            grad_items = (probabilities.T @ hidden).index_add_(0, targets, hidden, alpha=-1).mul_(grad_loss)
        return grad_hidden, grad_items, None, None, None


def full_softmax_cross_entropy(hidden: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                               offset: torch.Tensor | None = None, buffer: LogitBuffer | None = None) -> torch.Tensor:
    """Summed cross-entropy of `targets` (positions,) under a softmax over all items, logits hidden @ items.T.

    Equals `F.cross_entropy(hidden @ items.T + offset, targets, reduction="sum")` in value and
    gradients (up to float rounding); `offset` (n_items,) is a constant (no gradient). First-order only:
    a double backward raises. With `buffer`, the logits are written into it (see `LogitBuffer`).
    """
    if hidden.ndim != 2 or items.ndim != 2 or hidden.shape[1] != items.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and items {tuple(items.shape)} must be (P, d) and (n, d)")
    if targets.shape != (hidden.shape[0],):
        raise ValueError(f"targets must be ({hidden.shape[0]},), got {tuple(targets.shape)}")
    if offset is not None and offset.shape != (items.shape[0],):
        raise ValueError(f"offset must be ({items.shape[0]},), got {tuple(offset.shape)}")
    return _FullSoftmaxCrossEntropy.apply(hidden, items, targets, None if offset is None else offset.detach(), buffer)
