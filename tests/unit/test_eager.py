"""EAGER: decoder inputs, the loss terms and ablations, STT corruption, a tiny training run and its checkpoint."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ml.codes.trie import (
    CLS,
    END,
    MASK,
    N_SPECIAL,
    PAD,
    SOS,
    SUMMARY,
    BeamResult,
    constrained_beam_search,
    merge_by_confidence,
)
from ml.data.sequences import SequenceData
from ml.evaluate.ranking import evaluate_model
from ml.models.checkpoints import load_checkpoint, save_checkpoint, supports_retrieval
from ml.models.code_decoder import SelfAttentionCache
from ml.models.eager import (
    EAGER,
    EAGERConfig,
    StreamCodes,
    union_of_beams,
    unit_rms,
)
from ml.models.eager_decoder import decoder_inputs
from ml.models.sasrec import left_pad
from ml.train.eager_loss import _random_subset, _transfer_losses, eager_losses, stt_rows
from ml.train.eager_training import next_item_examples, train_eager

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ITEMS = 12
TINY = dict(hidden_dim=32, encoder_layers=1, decoder_layers=1, n_heads=2, feedforward_dim=64, dropout=0.0,
            max_len=6, beam_size=4, lr=1e-2, warmup_steps=5, batch_size=32, eval_batch_size=16, max_epochs=30,
            patience=30, eval_every=5, device="cpu")


def _streams(n_items: int = N_ITEMS, seed: int = 0) -> dict[str, StreamCodes]:
    """Behaviour codes: 4 x 3 grid by item index; semantic codes: a different grouping (by index mod 4)."""
    rng = np.random.default_rng(seed)
    items = np.arange(n_items)
    behaviour = np.stack([items // 3, items % 3], axis=1)
    semantic = np.stack([items % 4, items // 4], axis=1)
    return {
        "behaviour": StreamCodes(codes=behaviour, features=rng.normal(size=(n_items, 8)).astype(np.float32),
                                 branching=4),
        "semantic": StreamCodes(codes=semantic, features=rng.normal(size=(n_items, 10)).astype(np.float32),
                                branching=4),
    }


def _cycle_data(n_users: int = 48, length: int = 8) -> SequenceData:
    """Every user walks the item cycle 1 -> 2 -> ... -> 12 -> 1 from a different start: the next item is certain."""
    train, valid, test = [], [], []
    for user in range(n_users):
        walk = (user + np.arange(length + 2)) % N_ITEMS + 1
        train.append(walk[:length].astype(np.int64))
        valid.append(walk[length])
        test.append(walk[length + 1])
    return SequenceData(dataset="cycle", item_ids=[f"i{i:02d}" for i in range(N_ITEMS)],
                        user_ids=[f"u{u:03d}" for u in range(n_users)], train=train,
                        valid_targets=np.array(valid), test_targets=np.array(test))


def test_decoder_inputs_place_the_summary_after_the_last_code() -> None:
    tokens = torch.tensor([[7, 11, END, PAD], [8, END, PAD, PAD]])
    inputs, targets, summary_at = decoder_inputs(tokens)
    assert inputs.tolist() == [[SOS, 7, 11, SUMMARY, PAD], [SOS, 8, SUMMARY, PAD, PAD]]
    assert targets.tolist() == [[7, 11, END, PAD, PAD], [8, END, PAD, PAD, PAD]]
    assert summary_at.tolist() == [3, 2]


def test_unit_rms_features() -> None:
    features = unit_rms(np.array([[3.0, 4.0], [0.0, 10.0]]))
    np.testing.assert_allclose(np.sqrt((features**2).mean(axis=1)), [1.0, 1.0], rtol=1e-6)


def _batch(model: EAGER) -> tuple[torch.Tensor, torch.Tensor]:
    histories, targets = next_item_examples(_cycle_data().train, model.max_len)
    return histories[:20], targets[:20]


def test_every_loss_term_is_present_finite_and_reaches_its_parameters() -> None:
    torch.manual_seed(0)
    model = EAGER(N_ITEMS, _streams(), EAGERConfig(**TINY))
    losses = eager_losses(model, *_batch(model), nominal_batch=20, generator=torch.Generator().manual_seed(0))
    assert set(losses.terms) == {"gen_behaviour", "gen_semantic", "gct_behaviour", "gct_semantic",
                                 "stt_reconstruction", "stt_recognition"}
    assert torch.isfinite(losses.total) and all(np.isfinite(v) and v > 0 for v in losses.terms.values())
    losses.total.backward()
    for name in ("item_embedding.weight", "decoders.semantic.summary_head.weight",
                 "transfer.recognition_head.weight", "decoders.behaviour.token_embedding.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # STT alone reaches the semantic decoder through its summary output (the transfer the paper designs).
    model.zero_grad()
    histories, targets = _batch(model)
    memory, padding = model.encode(histories)
    inputs, _, summary_at = decoder_inputs(model.item_tokens("semantic", targets))
    semantic = model.decoders["semantic"]
    summary = semantic(inputs, semantic.stack.memory_kv(memory), padding)[torch.arange(len(targets)), summary_at]
    reconstruction, recognition = _transfer_losses(model, model.item_tokens("behaviour", targets), summary,
                                                   torch.Generator().manual_seed(0))
    (reconstruction + recognition).backward()
    assert semantic.stack.blocks[0].self_qkv.weight.grad.abs().sum() > 0
    assert model.decoders["behaviour"].stack.blocks[0].self_qkv.weight.grad is None


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"streams": "behaviour"}, {"gen_behaviour", "gct_behaviour"}),
    ({"streams": "semantic"}, {"gen_semantic", "gct_semantic"}),
    ({"gct_weight": 0.0}, {"gen_behaviour", "gen_semantic", "stt_reconstruction", "stt_recognition"}),
    ({"stt_weight": 0.0}, {"gen_behaviour", "gen_semantic", "gct_behaviour", "gct_semantic"}),
    ({"gct_contrastive_weight": 0.5}, {"gen_behaviour", "gen_semantic", "gct_behaviour", "gct_semantic",
                                       "gct_nce_behaviour", "gct_nce_semantic", "stt_reconstruction",
                                       "stt_recognition"}),
])
def test_ablations_switch_their_terms(overrides: dict, expected: set[str]) -> None:
    model = EAGER(N_ITEMS, _streams(), EAGERConfig(**{**TINY, **overrides}))
    losses = eager_losses(model, *_batch(model), 20, torch.Generator().manual_seed(0))
    assert set(losses.terms) == expected
    assert set(model.decoders) == set(EAGERConfig(**{**TINY, **overrides}).active_streams)
    assert (model.transfer is None) == ("stt_reconstruction" not in expected)


def test_loss_weighs_every_example_the_same_whatever_the_batch() -> None:
    model = EAGER(N_ITEMS, _streams(), EAGERConfig(**{**TINY, "stt_weight": 0.0})).eval()
    histories, targets = _batch(model)
    whole = eager_losses(model, histories, targets, 20, torch.Generator()).total
    halves = sum(eager_losses(model, histories[part], targets[part], 20, torch.Generator()).total
                 for part in (slice(0, 7), slice(7, 20)))
    torch.testing.assert_close(whole, halves)


def test_stt_masks_and_replaces_at_least_one_code_and_replacements_stay_in_their_level() -> None:
    codes = torch.tensor([[True, True, False], [True, False, False]] * 50)
    chosen = _random_subset(codes, 0.01, torch.Generator().manual_seed(1))
    assert (chosen.sum(dim=1) >= 1).all() and not (chosen & ~codes).any()
    # The corrupted path differs from the true one in at least one code, never in its level.
    model = EAGER(N_ITEMS, _streams(), EAGERConfig(**TINY))
    tokens = model.item_tokens("behaviour", torch.arange(1, N_ITEMS + 1))
    branching = model.decoders["behaviour"].vocabulary.branching
    captured = {}
    original = model.transfer.forward

    def spy(inputs: torch.Tensor, *args: object) -> torch.Tensor:
        captured["inputs"] = inputs
        return original(inputs, *args)

    model.transfer.forward = spy  # type: ignore[method-assign]
    eager_losses(model, torch.full((N_ITEMS, 2), 1), torch.arange(1, N_ITEMS + 1), N_ITEMS, torch.Generator())
    masked, true, corrupted = captured["inputs"].split(N_ITEMS)
    assert (masked[:, 0] == CLS).all() and (true[:, 1:3] == tokens[:, :2]).all()
    assert ((masked[:, 1:3] == MASK).sum(dim=1) >= 1).all()
    differs = corrupted[:, 1:3] != tokens[:, :2]
    assert differs.any(dim=1).all()
    level = lambda t: torch.div(t - N_SPECIAL, branching, rounding_mode="floor")  # noqa: E731
    assert (level(corrupted[:, 1:3]) == level(tokens[:, :2])).all()


@pytest.mark.parametrize("last_level", ["shared", "per_parent"])
def test_tiny_training_learns_a_fixed_pattern_and_reloads_to_the_same_rankings(tmp_path: Path,
                                                                              last_level: str) -> None:
    data = _cycle_data()
    result = train_eager(data, _streams(), EAGERConfig(**{**TINY, "last_level": last_level}))
    losses = [record["loss"] for record in result.history]
    assert losses[-1] < 0.5 * losses[0]
    # The right item comes first for every user, through the constrained beam search of both streams.
    ranked = result.model.recommend(data.history("valid")[0])
    assert [items[0][0] + 1 for items in ranked] == data.valid_targets.tolist()
    assert result.best_valid["mrr"] == 1.0
    # Deterministic: the same seed trains the same weights.
    again = train_eager(data, _streams(), EAGERConfig(**{**TINY, "last_level": last_level}))
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(value, again.model.state_dict()[key])
    # The checkpoint holds the code tables and reloads to the same rankings.
    saved = save_checkpoint(tmp_path, "cycle", "eager", result.model, data.item_ids, result.config, {"best_epoch": 1})
    assert saved.kind == "eager" and not supports_retrieval(saved.model)
    histories, targets = data.history("test")
    before = evaluate_model(result.model.score, histories, targets).ranks
    loaded = load_checkpoint(tmp_path, "cycle", "eager")
    np.testing.assert_array_equal(evaluate_model(loaded.model.score, histories, targets).ranks, before)
    np.testing.assert_array_equal(loaded.model.stream_codes["semantic"].codes, _streams()["semantic"].codes)


def test_the_step_budget_stops_training_mid_epoch_after_exactly_max_steps() -> None:
    """48 users x 7 examples at batch 32 is 11 steps an epoch: a budget of 15 runs one whole epoch and 4 steps."""
    data = _cycle_data()
    config = EAGERConfig(**{**TINY, "max_steps": 15, "eval_every": 1, "max_epochs": 30})
    result = train_eager(data, _streams(), config)
    assert [record["steps"] for record in result.history] == [11.0, 4.0]


@pytest.mark.parametrize(("schedule", "last_lr"), [("constant", 1e-2), ("inverse_sqrt", 1e-2 * (5 / 16) ** 0.5),
                                                   ("cosine", 0.0)])
def test_the_lr_schedule_is_applied_per_step(schedule: str, last_lr: float) -> None:
    """15 steps with a 5-step warm-up: the rate set for step 16 is flat, sqrt(5 / 16), or cosine's 0 at the budget."""
    config = EAGERConfig(**{**TINY, "max_steps": 15, "eval_every": 1, "lr_schedule": schedule})
    result = train_eager(_cycle_data(), _streams(), config)
    assert result.history[-1]["lr"] == pytest.approx(last_lr, abs=1e-12)


def test_path_log_probs_are_the_beam_scores_and_rerank_sums_the_streams() -> None:
    data = _cycle_data()
    model = train_eager(data, _streams(), EAGERConfig(**{**TINY, "max_epochs": 5})).model.eval()
    histories = data.history("valid")[0][:8]
    memory, padding = model.encode(left_pad(histories, model.max_len))
    beams = {}
    for stream in model.decoders:
        decoder = model.decoders[stream]
        kv, cache = decoder.stack.memory_kv(memory), SelfAttentionCache(len(decoder.stack.blocks))

        def step(prefixes, width, parents, decoder=decoder, kv=kv, cache=cache):  # noqa: ANN001, ANN202
            if parents is not None:
                cache.reorder(parents)
            return decoder.logits(decoder(prefixes, kv, padding, group=width, cache=cache)[:, -1])

        beams[stream] = constrained_beam_search(step, model.tries[stream], len(histories), 4)
        # Teacher-forced scoring of the beam's own paths gives the beam's own scores.
        rescored = model.path_log_probs(stream, memory, padding, beams[stream].items)
        np.testing.assert_allclose(rescored, beams[stream].log_probs, atol=1e-4)

    candidates = union_of_beams(list(beams.values()))
    assert all(len(set(row[row >= 0])) == (row >= 0).sum() for row in candidates)
    totals = sum(model.path_log_probs(stream, memory, padding, candidates) for stream in model.decoders)
    reranked = EAGER.__new__(EAGER)  # the trained model, its merge rule switched
    reranked.__dict__ = {**model.__dict__, "config": EAGERConfig(**{**TINY, "merge": "rerank"})}
    ranked = reranked.recommend(histories, beam_size=4)
    expected = merge_by_confidence([BeamResult(items=candidates, log_probs=totals)])
    assert [[item for item, _ in row] for row in ranked] == [[item for item, _ in row] for row in expected]
    assert [score for row in ranked for _, score in row] == pytest.approx(
        [score for row in expected for _, score in row], abs=1e-4)
    for row, items in enumerate(ranked):
        assert [score for _, score in items] == sorted((score for _, score in items), reverse=True)
        assert {item for item, _ in items} == set(candidates[row][candidates[row] >= 0].tolist())
    with pytest.raises(ValueError, match="merge must be one of"):
        EAGERConfig(merge="vote")


def test_the_union_ranked_by_its_scores_drops_empty_slots_and_keeps_ties_in_order() -> None:
    beams = [BeamResult(items=np.array([[3, 1], [2, -1]]), log_probs=np.zeros((2, 2), np.float32)),
             BeamResult(items=np.array([[1, 5], [2, 4]]), log_probs=np.zeros((2, 2), np.float32))]
    candidates = union_of_beams(beams)
    assert candidates.tolist() == [[3, 1, 5], [2, 4, -1]]
    scores = np.array([[-1.0, -0.5, -1.0], [-2.0, -3.0, -np.inf]], dtype=np.float32)
    assert merge_by_confidence([BeamResult(items=candidates, log_probs=scores)]) == [
        [(1, -0.5), (3, -1.0), (5, -1.0)], [(2, -2.0), (4, -3.0)]]


def test_stt_on_a_share_of_the_rows_scales_its_sums_back_up() -> None:
    generator = torch.Generator().manual_seed(0)
    rows = stt_rows(32, 0.25, generator)
    assert len(rows) == 8 and rows.tolist() == sorted(set(rows.tolist()))
    assert stt_rows(5, 1.0, generator).tolist() == [0, 1, 2, 3, 4] and len(stt_rows(5, 0.01, generator)) == 1
    # A share of the rows: the generation terms are untouched, the STT terms computed and finite.
    torch.manual_seed(0)
    model = EAGER(N_ITEMS, _streams(), EAGERConfig(**{**TINY, "stt_row_share": 0.5}))
    histories, targets = next_item_examples(_cycle_data(n_users=4).train, TINY["max_len"])
    half = eager_losses(model, histories[:4], targets[:4], 4, torch.Generator().manual_seed(1))
    model.config = EAGERConfig(**{**TINY, "stt_row_share": 1.0})
    every = eager_losses(model, histories[:4], targets[:4], 4, torch.Generator().manual_seed(1))
    assert half.terms["gen_semantic"] == every.terms["gen_semantic"]
    assert np.isfinite(half.terms["stt_reconstruction"]) and half.terms["stt_recognition"] > 0
    with pytest.raises(ValueError, match="stt_row_share"):
        EAGERConfig(stt_row_share=0.0)
