"""EAGER's training loss: generation + lambda_1 GCT + lambda_2 (reconstruction + recognition).

- Generation: cross-entropy of every token of the target item's path in each stream, summed over the
  path (= -log p(item | history) under teacher forcing) and over the streams. With per-parent last
  levels each position's softmax runs over its node's real children (`EAGER.path_log_likelihood`);
  with shared ones over the whole vocabulary, END included. The decoder runs only as far as a
  position is scored: the summary position is cut when neither GCT nor STT reads it.
- GCT: smooth-L1 (the paper's distillation metric) between the summary head's output and the target
  item's unit-RMS global feature of that stream, averaged over the feature dimensions (as
  `F.smooth_l1_loss` does by default), so lambda_1 weighs a 64-d and a 384-d feature alike; optionally
  an in-batch InfoNCE between the two (`gct_contrastive_weight`, off in the paper).
- STT reconstruction: a random `mask_ratio` of each behaviour path's code tokens (at least one) is
  replaced by MASK; each masked output is classified among that level's codes (with per-parent last
  levels, the parent's block) by dot product with the shared token embeddings: the paper's
  contrastive loss against the true token's feature, with every other code of the block as a
  negative instead of J sampled ones (there are only `branching`).
- STT recognition: a random `replace_ratio` of the tokens (at least one) swapped for another code of
  the same level makes the negative; the CLS output's logit says match (the true path) or not, by
  binary cross-entropy over one positive and one negative per example.
- STT runs on a random `stt_row_share` of each batch's examples (all of them by default), its sums
  scaled by the inverse share, so the term keeps its expected size at a fraction of its cost.

Every example weighs the same whatever batch it lands in: each term is a sum over the batch's
examples divided by the nominal batch size, not the batch's own size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ml.codes.trie import CLS, MASK, N_SPECIAL, PAD, block_start, code_block, code_slot
from ml.models.eager import EAGER
from ml.models.eager_decoder import decoder_inputs


@dataclass
class EAGERLosses:
    """Each term of one batch's loss (scaled by the nominal batch size) and their weighted total."""

    total: torch.Tensor
    terms: dict[str, float]


def _random_subset(codes: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Bool mask choosing about `ratio` of each row's code positions, at least one (codes: True where a code)."""
    draws = torch.rand(codes.shape, generator=generator).to(codes.device)
    chosen = (draws < ratio) & codes
    # Guarantee one per row: the code position with the lowest draw.
    first = torch.where(codes, draws, torch.full_like(draws, 2.0)).argmin(dim=1)
    chosen[torch.arange(len(codes), device=codes.device), first] = True
    return chosen & codes


def _transfer_losses(model: EAGER, behaviour_tokens: torch.Tensor, semantic_summary: torch.Tensor,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed reconstruction loss, summed recognition loss) of STT over a batch of token paths."""
    decoder = model.decoders["behaviour"]
    branching = decoder.vocabulary.branching
    codes = behaviour_tokens[:, :-1]  # the last column only ever holds END or PAD
    codes_only = torch.where(codes >= N_SPECIAL, codes, torch.zeros_like(codes))
    is_code = codes_only != PAD
    batch = len(codes_only)
    cls = torch.full((batch, 1), CLS, dtype=codes_only.dtype, device=codes_only.device)
    masked_at = _random_subset(is_code, model.config.mask_ratio, generator)
    masked = torch.where(masked_at, torch.full_like(codes_only, MASK), codes_only)
    replaced_at = _random_subset(is_code, model.config.replace_ratio, generator)
    # Another code of the same block (level, or parent): shift by 1..branching-1 (uniform, never the original).
    shift = torch.randint(1, branching, codes_only.shape, generator=generator).to(codes_only.device)
    swapped = (block_start(code_block(codes_only, branching), branching)
               + (code_slot(codes_only, branching) + shift) % branching)
    corrupted = torch.where(replaced_at, swapped, codes_only)
    inputs = torch.cat([cls, masked], dim=1), torch.cat([cls, codes_only], dim=1), torch.cat([cls, corrupted], dim=1)
    outputs = model.transfer(torch.cat(inputs), decoder.token_embedding, semantic_summary.repeat(3, 1))
    masked_out, true_out, corrupted_out = outputs.split(batch)

    # Reconstruction: logits over the masked token's block only (its level's codes, or its parent's children).
    rows, columns = masked_at.nonzero(as_tuple=True)
    truth = codes_only[rows, columns]
    block_tokens = block_start(code_block(truth, branching), branching).unsqueeze(1) + torch.arange(
        branching, device=truth.device)
    candidates = decoder.token_embedding(block_tokens)  # (n_masked, branching, d)
    logits = torch.einsum("nd,nkd->nk", masked_out[rows, columns + 1], candidates)
    reconstruction = F.cross_entropy(logits, code_slot(truth, branching), reduction="sum")

    # Recognition: one positive (the true path) and one negative (the corrupted path) per example.
    head = model.transfer.recognition_head
    positive, negative = head(true_out[:, 0]).squeeze(-1), head(corrupted_out[:, 0]).squeeze(-1)
    recognition = (F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive), reduction="sum")
                   + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative), reduction="sum"))
    return reconstruction, recognition


def stt_rows(batch: int, share: float, generator: torch.Generator) -> torch.Tensor:
    """The batch rows STT runs on: all of them at share 1, else a random ceil(share x batch) of them, in order."""
    if share >= 1.0:
        return torch.arange(batch)
    count = max(1, math.ceil(share * batch))
    return torch.randperm(batch, generator=generator)[:count].sort().values


def eager_losses(model: EAGER, histories: torch.Tensor, targets: torch.Tensor, nominal_batch: int,
                 generator: torch.Generator) -> EAGERLosses:
    """The weighted loss of one batch of (left-padded histories (batch, L), target item indices (batch,))."""
    config = model.config
    memory, padding = model.encode(histories)
    terms: dict[str, torch.Tensor] = {}
    summaries: dict[str, torch.Tensor] = {}
    total = torch.zeros((), device=histories.device)
    uses_gct = config.gct_weight > 0 or config.gct_contrastive_weight > 0
    for stream, decoder in model.decoders.items():
        tokens = model.item_tokens(stream, targets)
        inputs, labels, summary_at = decoder_inputs(tokens)
        # Causal: cutting the trailing positions nobody reads leaves the others' outputs unchanged.
        length = int((labels != PAD).sum(dim=1).max())
        needs_summary = uses_gct or (model.transfer is not None and stream == "semantic")
        if needs_summary:
            length = max(length, int(summary_at.max()) + 1)
        hidden = decoder(inputs[:, :length], decoder.stack.memory_kv(memory), padding)
        if stream in model.blocks:
            generation = -model.path_log_likelihood(stream, hidden, targets).sum()
        else:
            generation = F.cross_entropy(decoder.logits(hidden).transpose(1, 2), labels[:, :length],
                                         ignore_index=PAD, reduction="sum")
        terms[f"gen_{stream}"] = generation
        total = total + generation
        if not needs_summary:
            continue
        summary = hidden[torch.arange(len(targets), device=hidden.device), summary_at]
        summaries[stream] = summary
        if uses_gct:
            predicted = decoder.summary_head(summary)
            features = model.item_features(stream, targets)
            gct = F.smooth_l1_loss(predicted, features, reduction="none").mean(dim=1).sum()
            terms[f"gct_{stream}"] = gct
            total = total + config.gct_weight * gct
            if config.gct_contrastive_weight > 0:
                logits = F.normalize(predicted, dim=-1) @ F.normalize(features, dim=-1).T / config.gct_temperature
                # Duplicate targets in a batch are positives of each other, not negatives.
                same = targets.unsqueeze(0) == targets.unsqueeze(1)
                logits = logits.masked_fill(same & ~torch.eye(len(targets), dtype=torch.bool,
                                                              device=logits.device), float("-inf"))
                contrast = F.cross_entropy(logits, torch.arange(len(targets), device=logits.device), reduction="sum")
                terms[f"gct_nce_{stream}"] = contrast
                total = total + config.gct_contrastive_weight * contrast
    if model.transfer is not None:
        rows = stt_rows(len(targets), config.stt_row_share, generator).to(targets.device)
        reconstruction, recognition = _transfer_losses(model, model.item_tokens("behaviour", targets[rows]),
                                                       summaries["semantic"][rows], generator)
        # Scaled up from the subset, so the term weighs what it would over every example (in expectation).
        scale = len(targets) / len(rows)
        reconstruction, recognition = reconstruction * scale, recognition * scale
        terms["stt_reconstruction"], terms["stt_recognition"] = reconstruction, recognition
        total = total + config.stt_weight * (reconstruction + recognition)
    return EAGERLosses(total=total / nominal_batch,
                       terms={name: float(value.detach()) / nominal_batch for name, value in terms.items()})
