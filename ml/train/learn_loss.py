"""LEARN's training examples (history/target split, two-stage sampling) and its dense all-action loss.

Pure functions: numpy in, numpy out for the sampling; tensors in, a scalar out for the loss.

A training sequence is cut into a history (the user tower's input) and a target (the item tower's
input). The paper cuts at a timestamp (nine months of history, one month of target on its industrial
data) and does not say where on the Amazon data, though its remark that item towers (a) and (b)
coincide there implies a one-item target. We cut each sequence at a point drawn uniformly among its
valid split points, anew every epoch (`split_sequence`), so every item of a sequence is sometimes
history and sometimes target. `LEARNConfig.target_span` then keeps either the one item after the cut
("next", the default: the Amazon reading) or every item after it ("rest", the industrial one). On
amazon-beauty (MiniLM content, CPU shape, batch 128, 1 thread) "next" reached validation recall@10
0.044 after 6 epochs at 8 s each, "rest" 0.026 after 2 epochs at 36-41 s each: a user state pulled
towards items far in the future is a poor next-item query, and "rest" pays for the longer targets.

Sampling. With `LEARNConfig.sampling` off (the paper's setting on leave-one-out data) the sequence is
first cut to its most recent max_len items and every history position and every target position
enters the loss. With it on, the paper's two stages run on the whole sequence: (1) history and target
are each uniformly subsampled, order kept, to at most history_cap / target_cap items, which the towers
read; (2) N_h history positions and N_t target positions are drawn, without replacement, with
probability proportional to `position_weights` (all positions when there are no more than N_h / N_t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ml.models.learn import LEARNConfig


@dataclass(frozen=True)
class LEARNExample:
    """One user's training example: tower inputs and the positions of each that enter the loss."""

    history: np.ndarray  # int64 item indices, oldest first
    target: np.ndarray  # int64 item indices, oldest first
    history_positions: np.ndarray  # sorted int64 indices into history
    target_positions: np.ndarray  # sorted int64 indices into target


def position_weights(n: int, alpha: float = 10.0, beta: float = 10000.0) -> np.ndarray:
    """The paper's eq. (1): w_i = log(alpha + i (beta - alpha) / (N - 1)) / max(w), i = 0..N-1 (oldest first).

    Weights grow with i, so recent positions are drawn more often; with the paper's alpha = 10 and
    beta = 10000 the oldest position weighs log(10) / log(10000) = 1/4 of the most recent. N = 1 gives [1].
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    if not 1.0 < alpha <= beta:
        raise ValueError("need 1 < alpha <= beta (so that every weight is positive)")
    if n == 1:
        return np.ones(1)
    weights = np.log(alpha + np.arange(n) * (beta - alpha) / (n - 1))
    return weights / weights.max()


def split_sequence(seq: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(history, target) = (seq[:s], seq[s:]) with s uniform in 1..len(seq)-1, so both parts are non-empty."""
    seq = np.asarray(seq, dtype=np.int64)
    if len(seq) < 2:
        raise ValueError("a sequence needs at least two items to be split into history and target")
    split = int(rng.integers(1, len(seq)))
    return seq[:split], seq[split:]


def uniform_subsample(items: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """First stage: `cap` items drawn uniformly without replacement, in their original order (all if fewer)."""
    if len(items) <= cap:
        return items
    return items[np.sort(rng.choice(len(items), size=cap, replace=False))]


def weighted_positions(
    n: int, n_samples: int, rng: np.random.Generator, alpha: float = 10.0, beta: float = 10000.0
) -> np.ndarray:
    """Second stage: `n_samples` of positions 0..n-1 drawn without replacement, p ~ position_weights; sorted."""
    if n <= n_samples:
        return np.arange(n, dtype=np.int64)
    weights = position_weights(n, alpha, beta)
    return np.sort(rng.choice(n, size=n_samples, replace=False, p=weights / weights.sum())).astype(np.int64)


def make_example(seq: np.ndarray, rng: np.random.Generator, config: LEARNConfig) -> LEARNExample:
    """Split one training sequence and choose the positions of the loss, as the module docstring describes."""
    seq = np.asarray(seq, dtype=np.int64)
    history, target = split_sequence(seq if config.sampling else seq[-config.max_len :], rng)
    if config.target_span == "next":
        target = target[:1]
    if not config.sampling:
        return LEARNExample(history, target, np.arange(len(history)), np.arange(len(target)))
    history = uniform_subsample(history, config.history_cap, rng)
    target = uniform_subsample(target, config.target_cap, rng)
    return LEARNExample(
        history=history,
        target=target,
        history_positions=weighted_positions(len(history), config.n_history_samples, rng, config.alpha, config.beta),
        target_positions=weighted_positions(len(target), config.n_target_samples, rng, config.alpha, config.beta),
    )


def dense_all_action_loss(
    user_emb: torch.Tensor,
    user_mask: torch.Tensor,
    item_emb: torch.Tensor,
    item_mask: torch.Tensor,
    target_item_ids: torch.Tensor,
    temperature: torch.Tensor | float,
    target_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over all (user position, target item) pairs of a user of an in-batch softmax cross-entropy.

    Shapes: user_emb (B, N_h, d) with user_mask (B, N_h) bool (True = a sampled user position);
    item_emb (B, N_t, d) with item_mask (B, N_t) and target_item_ids (B, N_t) int64.

    For user b, user position h and target position t (both masked in), with s(x, y) = <x, y> / tau:

        loss(b, h, t) = -log( exp(s(u_bh, v_bt)) / (exp(s(u_bh, v_bt)) + sum_{(c, k) in Neg(b)} exp(s(u_bh, v_ck))) )

    so each user contributes N_h x N_t positive pairs. Neg(b) holds the masked-in target items of the
    other users of the batch (c != b), minus false negatives: any (c, k) whose item id equals the id
    of one of user b's own masked-in targets, which removes in particular every copy of the positive's
    own item (those items are positives of user b, and pushing u_bh away from them would contradict
    the pairs that pull it towards them). The result is the plain mean of loss(b, h, t) over all pairs
    of the batch; a pair with no negative left has loss 0.

    `target_log_q` (B, N_t), when given, is log q(item) of each target item, q being how often the item
    appears as a target, i.e. as an in-batch negative. It is subtracted from every logit, positives and
    negatives alike (the sampled-softmax "logQ" correction of Yi et al., 2019): in-batch negatives are
    drawn by popularity, so without it a popular item is pushed away from users in proportion to how
    often it shows up, and the learned scores turn against popular items, which full ranking punishes.
    """
    if user_emb.ndim != 3 or item_emb.ndim != 3 or user_emb.shape[0] != item_emb.shape[0]:
        raise ValueError(f"need (B, N_h, d) and (B, N_t, d), got {tuple(user_emb.shape)} and {tuple(item_emb.shape)}")
    if user_mask.shape != user_emb.shape[:2] or item_mask.shape != item_emb.shape[:2]:
        raise ValueError("masks must be (B, N_h) and (B, N_t)")
    if target_item_ids.shape != item_mask.shape:
        raise ValueError("target_item_ids must be (B, N_t)")
    n_users = user_emb.shape[0]
    pairs = user_mask.unsqueeze(2) & item_mask.unsqueeze(1)  # (B, N_h, N_t)
    if not pairs.any():
        raise ValueError("no (user position, target item) pair is masked in")

    positives = torch.einsum("bhd,btd->bht", user_emb, item_emb) / temperature
    logits = torch.einsum("bhd,ckd->bhck", user_emb, item_emb) / temperature  # (B, N_h, B, N_t)
    if target_log_q is not None:
        if target_log_q.shape != item_mask.shape:
            raise ValueError("target_log_q must be (B, N_t)")
        positives = positives - target_log_q.unsqueeze(1)
        logits = logits - target_log_q[None, None]

    # keep[b, c, k]: item (c, k) is a negative of user b.
    ids = target_item_ids.masked_fill(~item_mask, -1)
    own = (ids.unsqueeze(2).unsqueeze(3) == ids.unsqueeze(0).unsqueeze(0)) & item_mask.unsqueeze(2).unsqueeze(3)
    shares_a_target = own.any(dim=1)  # (B, B, N_t): (c, k) has the id of one of b's targets
    other_user = ~torch.eye(n_users, dtype=torch.bool, device=user_emb.device)
    keep = item_mask.unsqueeze(0) & other_user.unsqueeze(2) & ~shares_a_target
    # A finite floor rather than -inf keeps logsumexp's gradient finite for users with no negative.
    floor = torch.finfo(logits.dtype).min
    negatives = logits.masked_fill(~keep.unsqueeze(1), floor).flatten(2).logsumexp(dim=2)  # (B, N_h)
    has_negative = keep.flatten(1).any(dim=1)[:, None, None]
    per_pair = torch.where(
        has_negative, torch.logaddexp(positives, negatives.unsqueeze(2)) - positives, torch.zeros_like(positives)
    )
    return per_pair[pairs].mean()
