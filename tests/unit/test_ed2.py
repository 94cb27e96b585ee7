"""ED2: vocabulary and LM head of both backbones, instruction splicing, static vs dynamic index, a tiny run."""

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.data.ed2_instructions import (
    PIECES,
    item_users,
    next_item_examples,
    sample_user_predictions,
    sequence_examples,
)
from ml.data.sequences import SequenceData
from ml.evaluate.ranking import evaluate_model
from ml.models.checkpoints import load_checkpoint, save_checkpoint, supports_retrieval
from ml.models.ed2 import ED2, code_tables_csv
from ml.models.ed2_backbone import apply_lora, load_smollm2, tiny_vocabulary
from ml.models.ed2_config import ED2Config
from ml.models.residual_quantizer import NO_SUFFIX, CodeTable
from ml.train.ed2_loss import ed2_losses, next_item_example, user_example
from ml.train.ed2_training import pretrain_quantizers, reassign, tiny_backbone, train_ed2

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ITEMS, N_USERS = 12, 48
TINY = dict(hidden_dim=32, n_layers=1, n_heads=2, intermediate_dim=64, levels=2, codebook_size=8, latent_dim=8,
            quantizer_hidden=16, quantizer_pretrain_steps=40, max_len=6, beam_size=4, lr=1e-2, warmup_steps=5,
            batch_size=32, eval_batch_size=16, max_epochs=12, eval_every=3, patience=10, regulator_entities=16,
            user_context=3, device="cpu")


def _cycle_data(n_users: int = N_USERS, length: int = 6) -> SequenceData:
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


def _semantics(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N_ITEMS, 10)).astype(np.float32), rng.normal(size=(N_USERS, 6)).astype(np.float32)


def _model(**overrides: object) -> ED2:
    config = ED2Config(**{**TINY, **overrides})
    torch.manual_seed(0)
    lm, vocabulary, lm_config = tiny_backbone(config)
    return ED2(*_semantics(), config, lm, vocabulary, lm_config)


def _unique_table(n: int, levels: int = 2, size: int = 4) -> CodeTable:
    """A hand-made collision-free table: entity i gets the base-`size` digits of i (suffix where that repeats)."""
    codes = np.stack([(np.arange(n) // size**level) % size for level in reversed(range(levels))], axis=1)
    suffix = np.where(np.arange(n) >= size**levels, np.arange(n) // size**levels - 1, NO_SUFFIX)
    return CodeTable(codes.astype(np.int64), suffix.astype(np.int64), int((suffix != NO_SUFFIX).sum()), 0)


def test_tiny_vocabulary_maps_index_tokens_to_the_tables_and_back() -> None:
    vocabulary = tiny_vocabulary(levels=3, size=5)
    seen = set()
    for block in (vocabulary.items, vocabulary.users):
        for level in range(block.levels + 1):  # the last level is the suffix
            for code in range(block.size):
                token = block.token(level, code)
                assert block.inverse(token) == (level, code)
                seen.add(token)
    assert len(seen) == 2 * 4 * 5 and max(seen) == vocabulary.size - 1
    words = {token for piece in vocabulary.pieces.values() for token in piece}
    assert not words & seen and vocabulary.end not in seen | words
    with pytest.raises(ValueError):
        vocabulary.items.inverse(vocabulary.users.first)
    model = _model()
    assert model.lm.get_input_embeddings().weight.shape[0] == model.vocabulary.size
    assert model.lm.get_output_embeddings().weight.shape[0] == model.vocabulary.size
    hidden = torch.zeros(3, model.lm.config.hidden_size)
    assert model.answer_logits(hidden, "item").shape == (3, 1 + model.vocabulary.items.count)


def test_entity_tokens_inverse_look_up_to_the_code_table() -> None:
    model = _model()
    table = _unique_table(N_ITEMS)
    model.set_codes("item", table)
    for row, tokens in enumerate(model.entity_tokens("item")):
        decoded = [model.vocabulary.items.inverse(token) for token in tokens]
        assert [code for level, code in decoded if level < 2] == table.codes[row].tolist()
        suffix = [code for level, code in decoded if level == 2]
        assert suffix == ([] if table.suffix[row] == NO_SUFFIX else [table.suffix[row]])


def test_instruction_splices_the_current_codes_and_never_the_target() -> None:
    data = _cycle_data()
    model = _model()
    model.set_codes("item", _unique_table(N_ITEMS))
    model.set_codes("user", _unique_table(N_USERS))
    pieces = model.vocabulary.pieces
    items, users = model.entity_tokens("item"), model.entity_tokens("user")
    user, position = 5, 4
    example = next_item_example(model, data.train, user, position)
    history = data.train[user][:position]
    expected = list(pieces["next_intro"])
    for index, item in enumerate(history):
        expected += (pieces["separator"] if index else []) + items[item - 1]
    expected += pieces["next_ask"] + users[user] + pieces["next_end"]
    assert example.prompt == expected and example.target == data.train[user][position] - 1
    # The spans name every spliced entity and cover exactly its tokens: the history in order, then the user.
    owners = [("item", int(item) - 1) for item in history] + [("user", user)]
    assert [(span.kind, span.row) for span in example.spliced] == owners
    for span in example.spliced:
        assert example.prompt[span.start:span.stop] == (items if span.kind == "item" else users)[span.row]
    # Other codes, other prompt: the prompt is spliced from the codes current when it is built.
    model.set_codes("item", replace(_unique_table(N_ITEMS), codes=_unique_table(N_ITEMS).codes[::-1].copy()))
    assert next_item_example(model, data.train, user, position).prompt != expected
    # The target item's full index never appears among the prompt's history entries, for any example.
    model.set_codes("item", _unique_table(N_ITEMS))
    examples = next_item_examples(data.train)
    for user, position in zip(examples.users, examples.positions, strict=True):
        example = next_item_example(model, data.train, int(user), int(position))
        shown = _history_entries(example.prompt, pieces, len(users[int(user)]))
        assert items[example.target] not in shown
        assert shown == [items[item - 1] for item in data.train[user][max(0, position - 6):position]]


def _history_entries(prompt: list[int], pieces: dict[str, list[int]], user_tokens: int) -> list[list[int]]:
    """The history entries of a next-item prompt (whose user index has `user_tokens` tokens), split at the separator."""
    body = prompt[len(pieces["next_intro"]):]
    body = body[:len(body) - len(pieces["next_ask"]) - user_tokens - len(pieces["next_end"])]
    entries, current = [], []
    for token in body:
        if [token] == pieces["separator"]:
            entries.append(current)
            current = []
        else:
            current.append(token)
    return entries + [current]


@pytest.mark.parametrize(("length", "max_len", "ends"), [(6, 6, [5]), (7, 6, [6]), (8, 6, [1, 7]), (2, 3, [1]),
                                                          (14, 3, [1, 4, 7, 10, 13]), (1, 3, [])])
def test_sequence_windows_make_every_position_a_target_once(length: int, max_len: int, ends: list[int]) -> None:
    examples = sequence_examples([np.arange(1, length + 1)], max_len)
    assert examples.positions.tolist() == ends
    # Targets of a window: its end and the history items after the window's first.
    covered = [target for end in ends for target in range(max(1, end - max_len + 1), end + 1)]
    assert sorted(covered) == list(range(1, length))


def test_a_sequence_example_scores_every_history_item_after_the_first_from_the_separator_before_it() -> None:
    data = _cycle_data()
    model = _model()
    pretrain_quantizers(model, model.config)
    items = model.entity_tokens("item")
    example = next_item_example(model, data.train, 5, 5, inner=True)
    window = data.train[5][:5]
    assert [item for _, item in example.inner] == [int(item) - 1 for item in window[1:]]
    for column, item in example.inner:  # teacher forcing: the item's tokens follow the predicting column
        assert [example.prompt[column]] == model.builder.pieces["separator"]
        assert example.prompt[column + 1:column + 1 + len(items[item])] == items[item]
    # The prompt and the final answer are the prompt form's; only the inner targets are added.
    plain = next_item_example(model, data.train, 5, 5)
    assert (plain.prompt, plain.target, plain.inner) == (example.prompt, example.target, ())
    # Each target weighs what a prompt does: the sequence's item NLL over its targets per example.
    inner_terms = ed2_losses(model, [example], nominal_batch=1, item_targets_per_example=5.0).terms
    plain_terms = ed2_losses(model, [plain], nominal_batch=1).terms
    # The inner targets add their NLL (untrained: about ln 9 a token) to the final answer's.
    assert inner_terms["nll"] * 5.0 > plain_terms["nll"] + 1.0
    with pytest.raises(ValueError, match="latent_pull"):
        ED2Config(latent_pull=0.5, next_item_form="sequences")


def test_training_in_sequence_form_learns_and_is_deterministic() -> None:
    data = _cycle_data()
    config = ED2Config(**{**TINY, "next_item_form": "sequences", "max_epochs": 24, "eval_every": 6})
    result = train_ed2(data, *_semantics(), config)
    assert result.history[-1]["nll"] < 0.5 * result.history[0]["nll"]
    assert result.best_valid["recall@5"] > 0.6
    again = train_ed2(data, *_semantics(), config)
    assert [r["loss"] for r in again.history] == pytest.approx([r["loss"] for r in result.history])


def test_examples_read_only_the_training_split() -> None:
    data = _cycle_data()
    # Make every valid and test target an item that no training sequence holds.
    held_out = SequenceData(dataset="held", item_ids=[*data.item_ids, "new1", "new2"], user_ids=data.user_ids,
                            train=data.train, valid_targets=np.full(N_USERS, N_ITEMS + 1),
                            test_targets=np.full(N_USERS, N_ITEMS + 2))
    examples = next_item_examples(held_out.train)
    assert len(examples) == N_USERS * 5
    targets = {int(held_out.train[u][p]) for u, p in zip(examples.users, examples.positions, strict=True)}
    assert targets <= set(range(1, N_ITEMS + 1))
    sets = item_users(held_out.train, held_out.n_items)
    assert len(sets.of(N_ITEMS + 1)) == 0 and len(sets.of(N_ITEMS + 2)) == 0
    for example in sample_user_predictions(sets, 200, 3, np.random.default_rng(0)):
        users_of_item = set(sets.of(example.item).tolist())
        assert example.target in users_of_item and set(example.context) <= users_of_item - {example.target}
        assert example.item in held_out.train[example.target]


def test_user_prediction_prompt_and_loss_terms() -> None:
    data = _cycle_data()
    model = _model()
    pretrain_quantizers(model, model.config)
    task = sample_user_predictions(item_users(data.train, N_ITEMS), 1, 3, np.random.default_rng(0))[0]
    example = user_example(model, task)
    users = model.entity_tokens("user")
    assert example.kind == "user" and example.target == task.target
    assert users[task.target] != example.prompt[-len(users[task.target]):]
    assert [(span.kind, span.row) for span in example.spliced] == [("item", task.item - 1)] + [
        ("user", user) for user in task.context]
    for span in example.spliced:
        expected_tokens = (model.entity_tokens(span.kind))[span.row]
        assert example.prompt[span.start:span.stop] == expected_tokens
    batch = [example, next_item_example(model, data.train, 0, 3)]
    losses = ed2_losses(model, batch, nominal_batch=2)
    assert {"nll_item", "nll_user", "quantizer_item", "token_regulator_user", "index_regulator_item"} <= set(
        losses.terms)
    losses.total.backward()
    assert model.item_quantizer.codebooks.grad is not None  # the dynamic index learns from the loss
    static = _model(index="static", index_regulator_weight=0.0)
    pretrain_quantizers(static, static.config)
    terms = ed2_losses(static, batch, nominal_batch=2).terms
    assert not any(name.startswith(("quantizer", "token_regulator", "index_regulator")) for name in terms)


def test_latent_pull_changes_no_value_and_gives_the_recommendation_gradient_to_the_latents() -> None:
    """The straight-through pull: same loss, and the NLL's gradient reaches the encoders only with it."""
    data = _cycle_data()
    task = sample_user_predictions(item_users(data.train, N_ITEMS), 1, 3, np.random.default_rng(0))[0]
    gradients, totals = {}, {}
    for pull in (1.0, 0.0):
        model = _model(latent_pull=pull, index_regulator_weight=0.0, token_regulator_weight=0.0,
                       commitment_weight=0.0)
        pretrain_quantizers(model, model.config)
        batch = [next_item_example(model, data.train, user, 3) for user in range(4)] + [user_example(model, task)]
        losses = ed2_losses(model, batch, nominal_batch=5)
        losses.total.backward()
        totals[pull] = float(losses.total.detach())
        gradients[pull] = {kind: torch.cat([p.grad.flatten() for p in model.quantizer(kind).encoder.parameters()])
                           for kind in ("item", "user")}
    assert totals[1.0] == pytest.approx(totals[0.0], rel=1e-6)
    for kind in ("item", "user"):
        # Without the pull the encoders learn from the reconstruction alone; the pull adds the NLL's gradient.
        assert not torch.allclose(gradients[1.0][kind], gradients[0.0][kind])


def test_beam_scores_are_the_constrained_path_log_probabilities() -> None:
    """Each beam item's score equals its path's log-probability from one full forward pass, renormalised over the trie."""
    from ml.codes.trie import END, N_SPECIAL

    data = _cycle_data()
    model = _model(beam_size=5).eval()
    pretrain_quantizers(model, model.config)
    histories = [data.train[user][:2 + user % 4] for user in range(6)]  # prompts of different lengths (padding)
    ranked = model.recommend(histories, np.arange(6))
    trie, block = model.trie(), model.vocabulary.items
    with torch.no_grad():
        for user, beam in enumerate(ranked):
            assert len(beam) == 5
            for item, score in beam:
                prompt = model.next_item_prompt(user, histories[user])
                tokens = model.entity_tokens("item")[item]
                ids = torch.tensor([prompt + tokens])
                hidden = model.hidden_states(ids, torch.ones_like(ids))
                expected, node = 0.0, np.zeros(1, dtype=np.int64)
                for offset, token in enumerate([N_SPECIAL + t - block.first for t in tokens] + [END]):
                    allowed = trie.allowed_mask(node)[0]
                    if allowed.sum() > 1:
                        logits = model._decoding_logits(model.answer_logits(hidden[:, len(prompt) - 1 + offset],
                                                                            "item"))[0]
                        expected += float(torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), 0)[token])
                    node = trie.step(node, np.array([token]))
                assert score == pytest.approx(expected, abs=1e-4)


def test_static_index_never_changes_codes_and_dynamic_reassigns() -> None:
    data = _cycle_data()
    semantics = _semantics()
    static = train_ed2(data, *semantics, ED2Config(**{**TINY, "index": "static", "max_epochs": 3, "eval_every": 3}))
    torch.manual_seed(0)
    lm, vocabulary, lm_config = tiny_backbone(static.config)
    fresh = ED2(*semantics, static.config, lm, vocabulary, lm_config)
    pretrain_quantizers(fresh, static.config)
    for kind in ("item", "user"):
        assert static.model.code_table(kind).changed_from(fresh.code_table(kind)) == 0
    assert not any(name.endswith("codes_changed") for record in static.history for name in record)
    dynamic = train_ed2(data, *semantics, ED2Config(**{**TINY, "max_epochs": 3, "eval_every": 3}))
    assert all("item_codes_changed" in record for record in dynamic.history[1:])
    # By steps (budgets shorter than an epoch): 10 steps per epoch, a re-assignment every 4 steps.
    by_steps = train_ed2(data, *semantics, ED2Config(**{**TINY, "max_epochs": 2, "eval_every": 2,
                                                        "reassign_every_steps": 4}))
    assert [record["reassignments"] for record in by_steps.history] == [2, 2]  # before steps 4, 8 and 12, 16


def test_the_index_freezes_after_max_reassignments() -> None:
    """The authors' schedule: re-index once, then the tables stay and the quantisers stop learning."""
    data, semantics = _cycle_data(), _semantics()
    settings = {**TINY, "max_epochs": 2, "eval_every": 2, "reassign_every_steps": 4}
    frozen = train_ed2(data, *semantics, ED2Config(**{**settings, "max_reassignments": 1})).history
    assert [record.get("reassignments", 0) for record in frozen] == [1, 0]  # before step 4 only, not 8, 12, 16
    assert [record["index_frozen"] for record in frozen] == [1.0, 1.0]
    assert [record["index_lr"] for record in frozen] == [0.0, 0.0]
    # The index's own terms stop with the freeze: epoch 1 has them from its steps before it, epoch 2 none.
    assert ["quantizer_item" in record and "token_regulator_user" in record for record in frozen] == [True, False]
    assert "index_regulator_item" in frozen[1]  # the index-level regulator trains the backbone: it stays
    dynamic = train_ed2(data, *semantics, ED2Config(**settings)).history
    assert [record["index_frozen"] for record in dynamic] == [0.0, 0.0] and dynamic[-1]["index_lr"] > 0
    assert all("quantizer_item" in record for record in dynamic)


def test_reassignment_counts_the_codes_it_changed() -> None:
    """A table taken before a re-assignment keeps its codes, so the change count is the real one."""
    model = _model()
    pretrain_quantizers(model, model.config)
    before = model.code_table("item")
    with torch.no_grad():  # swap the first level's codewords pairwise: every entity's first code changes
        books = model.item_quantizer.codebooks
        books[0] = books[0][torch.arange(books.shape[1]) ^ 1]
    stats = reassign(model)
    after = model.code_table("item")
    changed = int((before.codes != after.codes).any(axis=1).sum())
    assert changed > 0 and stats["item_codes_changed"] == changed
    assert stats["user_codes_changed"] == 0


def test_tiny_training_is_deterministic_learns_and_round_trips(tmp_path: Path) -> None:
    data = _cycle_data()
    config = ED2Config(**TINY)
    result = train_ed2(data, *_semantics(), config)
    losses = [record["nll"] for record in result.history]
    assert losses[-1] < 0.5 * losses[0]
    valid = evaluate_model(result.model.score, *data.history("valid"), user_rows=np.arange(N_USERS)).metrics
    assert valid["recall@10"] == pytest.approx(result.best_valid["recall@10"])
    # The beam holds 4 items: a guess of 4 of the 12 finds the target a third of the time.
    assert valid["recall@5"] > 0.6
    again = train_ed2(data, *_semantics(), config)
    assert [r["loss"] for r in again.history] == pytest.approx([r["loss"] for r in result.history])

    saved = save_checkpoint(tmp_path, "cycle", "ed2", result.model, data.item_ids, result.config, {"best_epoch": 1})
    assert saved.kind == "ed2" and not supports_retrieval(saved.model)
    loaded = load_checkpoint(tmp_path, "cycle", "ed2")
    for kind in ("item", "user"):
        assert loaded.model.code_table(kind).changed_from(result.model.code_table(kind)) == 0
    histories, _ = data.history("test")
    rows = np.arange(N_USERS)
    assert torch.equal(loaded.model.score(histories, rows), result.model.score(histories, rows))
    tables = code_tables_csv(loaded.model, data.item_ids, data.user_ids)
    lines = tables["ed2_item_codes.csv"].splitlines()
    assert lines[0] == "item_id,c1,c2,suffix" and len(lines) == N_ITEMS + 1
    with pytest.raises(ValueError, match="user's row"):
        loaded.model.score(histories)


@pytest.mark.slow
def test_smollm2_backbone_extends_its_vocabulary_and_trains_a_step(local_llm_dir: Path) -> None:
    """The packaged SmolLM2, offline: index tokens appended, the LM head extended with them, one training step."""
    from transformers import AutoTokenizer

    config = ED2Config(**{**TINY, "backbone": "smollm2", "max_len": 3})
    lm, vocabulary, lm_config = load_smollm2(config, Path(os.environ["LLMREC_MODEL_CACHE"]))
    tokenizer = AutoTokenizer.from_pretrained(str(local_llm_dir), local_files_only=True)
    base = len(tokenizer)
    assert vocabulary.end == base and vocabulary.items.first == base + 1
    assert vocabulary.size == base + 1 + 2 * vocabulary.items.count
    assert lm.get_input_embeddings().weight.shape[0] == vocabulary.size
    assert lm.get_output_embeddings().weight.shape[0] == vocabulary.size
    for block in (vocabulary.items, vocabulary.users):
        assert block.inverse(block.token(1, 3)) == (1, 3)
    assert tokenizer.decode(vocabulary.pieces["next_intro"]) == PIECES["next_intro"]
    data = _cycle_data()
    model = ED2(*_semantics(), config, lm, vocabulary, lm_config)
    pretrain_quantizers(model, config)
    batch = [next_item_example(model, data.train, user, 2) for user in range(2)]
    losses = ed2_losses(model, batch, nominal_batch=2)
    losses.total.backward()
    assert torch.isfinite(losses.total)
    new_rows = lm.get_input_embeddings().weight.grad[vocabulary.items.first:vocabulary.size]
    assert new_rows.abs().sum() > 0  # the added index tokens learn
    ranked = model.recommend(data.train[:2], np.arange(2), beam_size=3)
    assert all(len(items) == 3 for items in ranked)


def test_lora_freezes_the_backbone_but_its_embeddings_and_starts_as_the_base_model() -> None:
    config = ED2Config(**TINY)
    torch.manual_seed(0)
    lm, vocabulary, _ = tiny_backbone(config)
    ids = torch.tensor([[vocabulary.items.first, vocabulary.end, vocabulary.users.first]])
    before = lm(input_ids=ids).logits
    apply_lora(lm, rank=4, alpha=8.0)
    trainable = {name for name, parameter in lm.named_parameters() if parameter.requires_grad}
    assert trainable and all("lora_" in name or "embed_tokens" in name for name in trainable)
    assert any(name.endswith("q_proj.lora_a") for name in trainable)
    assert torch.allclose(lm(input_ids=ids).logits, before, atol=1e-6)  # B = 0: the update starts at zero


def test_every_answer_token_weighs_the_same_whatever_its_batch() -> None:
    """The NLL is a sum over answer tokens over the nominal batch: two halves add up to the whole."""
    data = _cycle_data()
    model = _model(index="static", index_regulator_weight=0.0).eval()
    pretrain_quantizers(model, model.config)
    tasks = sample_user_predictions(item_users(data.train, N_ITEMS), 3, 3, np.random.default_rng(0))
    batch = [next_item_example(model, data.train, user, 1 + user % 5) for user in range(6)]
    batch += [user_example(model, task) for task in tasks]
    whole = ed2_losses(model, batch, nominal_batch=32).total
    halves = ed2_losses(model, batch[::2], 32).total + ed2_losses(model, batch[1::2], 32).total
    assert float(whole) == pytest.approx(float(halves), rel=1e-5)


def test_training_is_bit_identical_on_two_threads() -> None:
    """Two runs on two threads give the same weights (index-token gradients accumulate deterministically)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        config = ED2Config(**{**TINY, "max_epochs": 2, "eval_every": 2})
        first = train_ed2(_cycle_data(), *_semantics(), config).model.state_dict()
        second = train_ed2(_cycle_data(), *_semantics(), config).model.state_dict()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not torch.are_deterministic_algorithms_enabled()  # the setting is restored after training


def test_index_capacity_fails_fast_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    from ml.models.residual_quantizer import check_index_capacity

    with pytest.raises(ValueError, match="cannot hold 300 users"):
        check_index_capacity("user", 300, levels=2, codebook_size=4)  # 16 codes x 5 suffixes = 80
    with caplog.at_level("WARNING", logger="ml.models.residual_quantizer"):
        check_index_capacity("user", 22_363, levels=2, codebook_size=64)
    assert "codebook_size >= 150" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ml.models.residual_quantizer"):
        check_index_capacity("user", 22_363, levels=4, codebook_size=64)
    assert caplog.text == ""


def test_cosine_decays_the_learning_rate_to_zero_at_the_step_budget() -> None:
    config = ED2Config(**{**TINY, "max_epochs": 2, "eval_every": 1, "lr_schedule": "cosine"})
    result = train_ed2(_cycle_data(), *_semantics(), config)
    rates = [record["lr"] for record in result.history]
    assert rates[0] < config.lr and rates[-1] == pytest.approx(0.0, abs=1e-12)
