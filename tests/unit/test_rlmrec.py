"""RLMRec's alignment losses and the shuffled-profile control (ml/models/rlmrec.py) on hand-built tensors."""

import math

import pytest
import torch
from torch import nn

from ml.models.rlmrec import ContrastiveAlignment, MaskedReconstruction, info_nce, shuffled_rows


def test_info_nce_matches_the_hand_computed_value() -> None:
    """Two orthogonal unit rows, each its own positive, T = 1: logits [[1, 0], [0, 1]] -> log(1 + e^-1)."""
    rows = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # normalised inside: only directions matter
    assert info_nce(rows, rows, temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    # Swapped positives: each anchor's positive is the orthogonal row -> log(1 + e).
    assert info_nce(rows, rows.flip(0), temperature=1.0).item() == pytest.approx(math.log(1 + math.e))
    # A lower temperature sharpens the aligned case towards zero.
    assert info_nce(rows, rows, temperature=0.1).item() < 1e-4


def test_contrastive_alignment_maps_semantics_into_the_cf_space() -> None:
    torch.manual_seed(0)
    con = ContrastiveAlignment(semantic_dim=6, cf_dim=3, temperature=0.5)
    cf, semantic = torch.randn(4, 3), torch.randn(4, 6)
    expected = info_nce(cf, con.to_cf(semantic), 0.5)
    torch.testing.assert_close(con(cf, semantic), expected)


def test_masking_replaces_exactly_the_chosen_rows_by_the_token() -> None:
    gen = MaskedReconstruction(semantic_dim=4, cf_dim=3, mask_ratio=0.25)
    with torch.no_grad():
        gen.mask_token.fill_(7.0)
    table = torch.arange(24, dtype=torch.float32).reshape(8, 3)
    masked_table, masked = gen.mask(table, torch.Generator().manual_seed(1))
    assert len(masked) == 2 and len(set(masked.tolist())) == 2
    kept = torch.tensor([row not in masked.tolist() for row in range(8)])
    torch.testing.assert_close(masked_table[kept], table[kept])
    assert (masked_table[masked] == 7.0).all()


def test_reconstruction_losses_on_hand_built_vectors() -> None:
    """With the mapping set to the identity: a perfect reconstruction costs 0 (cosine), an orthogonal one 1."""
    gen = MaskedReconstruction(semantic_dim=2, cf_dim=2, mask_ratio=0.5, loss="cosine")
    gen.to_semantic = nn.Identity()
    semantic = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    masked = torch.tensor([0, 1])
    assert gen(semantic, semantic, masked).item() == pytest.approx(0.0, abs=1e-6)
    assert gen(semantic.flip(1), semantic, masked).item() == pytest.approx(1.0)
    gen.loss = "infonce"
    torch.testing.assert_close(gen(semantic, semantic, masked), info_nce(semantic[masked], semantic[masked], 0.2))


@pytest.mark.parametrize("n", [2, 3, 10, 101])
def test_the_shuffle_control_gives_every_row_another_rows_vector(n: int) -> None:
    permutation = shuffled_rows(n, torch.Generator().manual_seed(n))
    assert sorted(permutation.tolist()) == list(range(n))
    assert (permutation != torch.arange(n)).all()
    torch.testing.assert_close(permutation, shuffled_rows(n, torch.Generator().manual_seed(n)))


def test_a_single_row_cannot_be_shuffled() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        shuffled_rows(1, torch.Generator())
