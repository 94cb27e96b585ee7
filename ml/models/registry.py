"""The model registry: one entry per model kind, and everything generic code needs to know about it.

An entry names the kind's module class and config class, how a checkpoint payload is written and
read back, how the kind scores (from an item history, or by the user's row in its training data),
whether it serves retrieval vectors (user vector x item vector, so its items go in an ANN index),
how it is evaluated, and its library trainer. Checkpoints, evaluation, publishing, the blend and the
recommend path ask the registry instead of testing model classes, so adding a model is its own
modules plus one entry here (docs/adding-a-model.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ml.models.blend import BlendConfig, ScoreBlend
from ml.models.content_sasrec import ContentSASRec, ContentSASRecConfig
from ml.models.eager import EAGER, EAGERConfig, StreamCodes
from ml.models.ed2 import ED2
from ml.models.ed2_backbone import ED2Vocabulary, build_lm
from ml.models.ed2_config import ED2Config
from ml.models.graph_cf import GraphCFConfig, GraphCFRecommender, build_backbone
from ml.models.learn import LEARN, LEARNConfig
from ml.models.popularity import PopularityModel
from ml.models.sasrec import SASRec, SASRecConfig

TrainedModule = PopularityModel | SASRec | ContentSASRec | LEARN | EAGER | ScoreBlend | GraphCFRecommender | ED2
RetrievalModel = SASRec | LEARN | ScoreBlend | GraphCFRecommender
ModelConfig = SASRecConfig | LEARNConfig | EAGERConfig | BlendConfig | GraphCFConfig | ED2Config

# "history": score(histories) reads the item history; "user_row": score(histories, user_rows) also reads the
# user's row in the split's user order (a graph model's user table, ED2's user semantic vector).
Scoring = Literal["history", "user_row"]
# "scorer": one forward pass scores the whole catalogue, in the evaluator's batches; "beam_search": a generative
# model decodes every user of a batch at once, in the batches it validated with (its config's eval_batch_size).
Evaluation = Literal["scorer", "beam_search"]

BLEND_COMPONENTS = ("sequence_model", "content_model")


def _no_extras(_: nn.Module) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class ModelKind:
    """What generic code needs to know about one model kind."""

    kind: str
    model_class: type[nn.Module]
    config_class: type | None  # None: the kind has no settings (popularity)
    # An untrained module of this kind from a checkpoint payload; the weights are loaded afterwards.
    build: Callable[[dict[str, Any]], nn.Module]
    # What the payload needs beyond kind, size, config and weights to build the module again.
    extras: Callable[[nn.Module], dict[str, Any]] = _no_extras
    scoring: Scoring = "history"
    retrieval: bool = False  # scores by user vector x item vector (catalogue_matrix, user_embedding)
    evaluation: Evaluation = "scorer"
    # Embeds the catalogue once per evaluation block (`model.cached_items()`) instead of once per batch.
    caches_items: bool = False
    # Serves a per-item score offset (`model.item_bias`, a popularity adjustment) when `has_item_bias()`.
    score_offset: bool = False
    # Learns an item-ID embedding table (the behaviour codes read it).
    item_id_table: bool = False
    trainer_path: str = ""  # "module:function" of the library trainer ("" for a kind fitted in place)
    sub_models: tuple[str, ...] = field(default=())  # attribute names of whole models it holds (the blend's)

    def trainer(self) -> Callable[..., Any]:
        """The library function that trains this kind (imported on demand: ml/train imports ml/models)."""
        if not self.trainer_path:
            raise ValueError(f"model kind {self.kind!r} has no trainer")
        module, _, function = self.trainer_path.partition(":")
        return getattr(importlib.import_module(module), function)


def _content_extras(model: nn.Module) -> dict[str, Any]:
    return {"content": model.content[1:].detach().cpu()}  # the padding row is rebuilt on load


def _eager_extras(model: nn.Module) -> dict[str, Any]:
    # The exact code tables and features it was trained and evaluated with.
    return {"streams": {
        stream: {"codes": torch.from_numpy(np.asarray(codes.codes, dtype=np.int64)),
                 "features": torch.from_numpy(np.asarray(codes.features, dtype=np.float32)),
                 "branching": codes.branching}
        for stream, codes in model.stream_codes.items()}}


def _graph_extras(model: nn.Module) -> dict[str, Any]:
    return {"n_users": model.n_users}  # the training edges are buffers, in the state dict


def _ed2_extras(model: nn.Module) -> dict[str, Any]:
    # Code tables and semantic vectors are buffers, in the state dict.
    return {"n_users": model.n_users, "vocabulary": model.vocabulary.to_dict(), "lm_config": model.lm_config}


def _blend_extras(model: nn.Module) -> dict[str, Any]:
    # Each component whole; the blend's own state (its weight and offset) is the rest of its state dict.
    return {"components": {name: payload(getattr(model, name), getattr(model, name).config)
                           for name in BLEND_COMPONENTS}}


def _build_eager(payload: dict[str, Any]) -> nn.Module:
    streams = {stream: StreamCodes(codes=part["codes"].numpy(), features=part["features"].numpy(),
                                   branching=int(part["branching"]))
               for stream, part in payload["streams"].items()}
    return EAGER(int(payload["n_items"]), streams, EAGERConfig(**payload["config"]))


def _build_graph(payload: dict[str, Any]) -> nn.Module:
    config = GraphCFConfig(**payload["config"])
    state = payload["state_dict"]
    return GraphCFRecommender(build_backbone(int(payload["n_users"]), int(payload["n_items"]), config),
                              state["edge_users"].numpy(), state["edge_items"].numpy(), config)


def _build_ed2(payload: dict[str, Any]) -> nn.Module:
    config = ED2Config(**payload["config"])
    state = payload["state_dict"]
    return ED2(state["item_semantic"].numpy(), state["user_semantic"].numpy(), config,
               build_lm(payload["lm_config"], config), ED2Vocabulary.from_dict(payload["vocabulary"]),
               payload["lm_config"])


def _build_blend(payload: dict[str, Any]) -> nn.Module:
    components = {name: rebuild(payload["components"][name]) for name in BLEND_COMPONENTS}
    return ScoreBlend(components["sequence_model"], components["content_model"],  # type: ignore[arg-type]
                      BlendConfig(**payload["config"]))


MODEL_KINDS: dict[str, ModelKind] = {entry.kind: entry for entry in (
    ModelKind("popularity", PopularityModel, None, lambda p: PopularityModel(int(p["n_items"]))),
    ModelKind("sasrec", SASRec, SASRecConfig, lambda p: SASRec(int(p["n_items"]), SASRecConfig(**p["config"])),
              retrieval=True, score_offset=True, item_id_table=True,
              trainer_path="ml.train.sasrec_training:train_sasrec"),
    ModelKind("content_sasrec", ContentSASRec, ContentSASRecConfig,
              lambda p: ContentSASRec(p["content"].numpy(), ContentSASRecConfig(**p["config"])),
              extras=_content_extras, retrieval=True, score_offset=True, item_id_table=True,
              trainer_path="ml.train.content_sasrec_training:train_content_sasrec"),
    ModelKind("learn", LEARN, LEARNConfig, lambda p: LEARN(p["content"].numpy(), LEARNConfig(**p["config"])),
              extras=_content_extras, retrieval=True, caches_items=True,
              trainer_path="ml.train.learn_training:train_learn"),
    ModelKind("eager", EAGER, EAGERConfig, _build_eager, extras=_eager_extras, evaluation="beam_search",
              trainer_path="ml.train.eager_training:train_eager"),
    ModelKind("blend", ScoreBlend, BlendConfig, _build_blend, extras=_blend_extras, retrieval=True,
              caches_items=True, score_offset=True, trainer_path="ml.train.blend_selection:fit_blend",
              sub_models=BLEND_COMPONENTS),
    ModelKind("graph_cf", GraphCFRecommender, GraphCFConfig, _build_graph, extras=_graph_extras,
              scoring="user_row", retrieval=True, trainer_path="ml.train.graph_cf_training:train_graph_cf"),
    ModelKind("ed2", ED2, ED2Config, _build_ed2, extras=_ed2_extras, scoring="user_row",
              evaluation="beam_search", trainer_path="ml.train.ed2_training:train_ed2"),
)}
_KINDS_BY_CLASS: dict[type, ModelKind] = {entry.model_class: entry for entry in MODEL_KINDS.values()}


def kind_of(model: nn.Module) -> ModelKind:
    """The registry entry of a model (its exact class: Content-SASRec is not SASRec here)."""
    try:
        return _KINDS_BY_CLASS[type(model)]
    except KeyError:
        raise TypeError(f"no model kind registered for {type(model).__name__}") from None


def model_kind(kind: str) -> ModelKind:
    """The registry entry of a kind name as checkpoints store it."""
    try:
        return MODEL_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(MODEL_KINDS)}") from None


def payload(model: nn.Module, config: ModelConfig | None) -> dict[str, Any]:
    """Everything `rebuild` needs to make `model` again: kind, size, config, weights and the frozen inputs it read."""
    entry = kind_of(model)
    if entry.config_class is not None and config is None:
        raise ValueError(f"a {entry.kind} checkpoint needs its config")
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    # A sub-model's weights travel in its own payload, not twice.
    state = {key: value for key, value in state.items()
             if not key.startswith(tuple(f"{name}." for name in entry.sub_models))}
    return {"kind": entry.kind, "n_items": model.n_items,
            "config": asdict(config) if entry.config_class is not None else {},
            "state_dict": state, **entry.extras(model)}


def rebuild(payload: dict[str, Any]) -> nn.Module:
    """The model a `payload` describes, weights loaded, in eval mode."""
    kind = model_kind(payload["kind"])
    model = kind.build(payload)
    own = model.state_dict()
    state = dict(payload["state_dict"])
    unknown = set(state) - set(own)
    if unknown:
        raise ValueError(f"{payload['kind']} checkpoint holds unknown state {sorted(unknown)[:5]}")
    if "item_bias" in own and "item_bias" not in state:
        # Written before the popularity adjustment existed: those models served raw scores, a zero bias.
        state["item_bias"] = torch.zeros_like(own["item_bias"])
    # Sub-models were loaded whole by `build`; every other tensor must be in the payload.
    sub_model_keys = tuple(f"{name}." for name in kind.sub_models)
    missing = {key for key in own if not key.startswith(sub_model_keys)} - set(state)
    if missing:
        raise ValueError(f"{payload['kind']} checkpoint lacks state {sorted(missing)[:5]}")
    own.update(state)
    model.load_state_dict(own)
    return model.eval()
