"""The model registry: every kind is reachable, resolves its trainer, and refuses what it does not know."""

import inspect

import numpy as np
import pytest
import torch

from ml.models.content_sasrec import ContentSASRec, ContentSASRecConfig
from ml.models.registry import MODEL_KINDS, kind_of, model_kind, payload, rebuild
from ml.models.sasrec import SASRec, SASRecConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_every_kind_names_its_class_and_a_trainer_that_exists(kind: str) -> None:
    entry = model_kind(kind)
    assert entry.kind == kind
    assert MODEL_KINDS[kind] is entry
    if entry.trainer_path:
        assert inspect.isfunction(entry.trainer())
    else:  # only popularity is fitted in place, by its own classmethod
        assert kind == "popularity" and callable(entry.model_class.fit)
    # Scoring by user row and retrieval vectors are what publishing and evaluation branch on.
    assert entry.scoring in ("history", "user_row")
    assert entry.evaluation in ("scorer", "beam_search")


def test_a_subclass_is_its_own_kind_not_its_parents() -> None:
    content = np.zeros((4, 3), dtype=np.float32)
    config = ContentSASRecConfig(hidden_dim=8, n_layers=1, n_heads=2, max_len=4)
    assert kind_of(ContentSASRec(content, config)).kind == "content_sasrec"
    assert kind_of(SASRec(4, SASRecConfig(hidden_dim=8, n_layers=1, n_heads=2, max_len=4))).kind == "sasrec"


def test_unknown_kinds_and_classes_are_refused_with_their_names() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'wide_and_deep'"):
        model_kind("wide_and_deep")
    with pytest.raises(TypeError, match="Linear"):
        kind_of(torch.nn.Linear(2, 2))


def test_a_payload_missing_or_adding_weights_is_refused() -> None:
    config = SASRecConfig(hidden_dim=8, n_layers=1, n_heads=2, max_len=4)
    described = payload(SASRec(4, config), config)
    extra = {**described, "state_dict": {**described["state_dict"], "stray.weight": torch.zeros(1)}}
    with pytest.raises(ValueError, match="unknown state"):
        rebuild(extra)
    partial = dict(described["state_dict"])
    del partial["item_embedding.weight"]
    with pytest.raises(ValueError, match="lacks state"):
        rebuild({**described, "state_dict": partial})
