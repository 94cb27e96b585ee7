"""Training assets: popularity, SASRec (ID-only baseline), Content-SASRec and LEARN, each tracked in MLflow.

Every training asset trains on the train split of one dataset, selects its epoch on validation
NDCG@10 (the test split is never read here), writes a self-contained checkpoint
(`ml/models/checkpoints.py`) and logs the run to MLflow: parameters, per-epoch metrics, the best
validation metrics and the model, tagged with the Dagster run id so a run links back to its
materialization. Test metrics are added to the same MLflow run by the evaluation asset.
"""

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

import dagster as dg
import numpy as np
from pydantic import Field

from ml.data.sequences import SequenceData
from ml.evaluate.ranking import evaluate_model
from ml.models.content_sasrec import ContentSASRecConfig, Fusion
from ml.models.learn import LEARNConfig, TargetSpan
from ml.models.popularity import PopularityModel
from ml.models.sasrec import (
    Batching,
    LossWeighting,
    LRSchedule,
    PopularityAdjustment,
    SASRecConfig,
)
from ml.models.selection_grids import DEFAULT_POPULARITY_BETAS
from ml.tracking.training_runs import TrainingOutcome
from ml.train.content_sasrec_training import train_content_sasrec
from ml.train.early_stopping import EpochCallback
from ml.train.learn_training import train_learn
from ml.train.sasrec_training import train_sasrec
from orchestration.assets.embeddings import (
    ITEM_LLM,
    ITEM_PROFILE,
    ITEM_TEXT,
    item_llm_embeddings,
    item_text_embeddings,
    profile_embeddings,
)
from orchestration.assets.shared import (
    RESUME_FIELDS,
    USER_SEQUENCES,
    ResumeSettings,
    load_split,
    read_content,
    train_tracked,
    training_asset,
)
from orchestration.resources import ArtifactStoreResource, MlflowResource, WarehouseResource

POPULARITY, SASREC, CONTENT_SASREC, LEARN = "popularity", "sasrec", "content_sasrec", "learn"
ContentSource = Literal["item_text", "item_llm", "item_profile"]
CONTENT_SETS: dict[str, str] = {"item_text": ITEM_TEXT, "item_llm": ITEM_LLM, "item_profile": ITEM_PROFILE}


class SASRecTrainingConfig(ResumeSettings):
    """SASRec settings (the ID-only baseline; its item table also feeds the behaviour codes).

    The defaults are the quick preset: the reference recipe with token-budget batches (`positions`:
    about 0.6x the time of a shuffled epoch for about 0.85x its progress, so more learning per
    minute) under a step budget: training stops at `max_steps` optimizer steps or when validation
    stalls, and validates every `eval_every_steps` steps, so that a 943-user dataset (4 steps per
    epoch) gets as many updates as a 22k-user one. The converged preset is the reference recipe
    itself (plain shuffled user batches) until early stopping.
    """

    hidden_dim: int = 64
    n_layers: int = 2
    n_heads: int = 1
    max_len: int = 50
    dropout: float = 0.5
    lr: float = 2e-3
    lr_schedule: LRSchedule = "constant"
    warmup_steps: int = 0
    batch_size: int = 256
    bucket_batches: int = Field(default=32, description="1 = plain shuffle; above 1, sort by length within "
                                "buckets of this many batches (narrower batches, faster epochs).")
    batching: Batching = Field(default="positions", description="users = batch_size users per batch; positions = "
                               "about as many real positions per batch, in length-sorted buckets (no padding).")
    loss_weighting: LossWeighting = Field(default="position", description="position = every real position "
                                          "weighs the same; batch_mean = the old biased per-batch mean (A/B only).")
    max_epochs: int = Field(default=1000, description="Upper bound; max_steps and early stopping end sooner.")
    # 10 Beauty epochs (88 steps each): the cold `make run` with every model in it measured 22 min with
    # 12, and the ID-only quick baseline gives up the least of the cuts that bring it under 20.
    max_steps: int | None = Field(default=880, description="Optimizer-step budget (10 Beauty epochs; "
                                  "null = max_epochs only).")
    eval_every_steps: int | None = Field(default=176, description="Validate every this many steps (rounded up "
                                         "to whole epochs); null = every eval_every epochs.")
    eval_every: int = 2
    patience: int = Field(default=5, description="Validations in a row without a better NDCG@10 before stopping.")
    seed: int = 0
    device: str = "auto"
    popularity_adjustment: PopularityAdjustment = Field(
        default="none", description="none = serve raw scores (the ID-only reference); balanced = subtract "
        "beta x log(1 + training count), beta chosen on balanced validation NDCG@10 (all and long-tail users).")
    popularity_betas: list[float] = Field(default=list(DEFAULT_POPULARITY_BETAS),
                                          description="The grid `balanced` chooses beta from (0 = no adjustment).")
    train_logit_adjustment: float = Field(default=0.0, description="tau of a logit-adjusted training loss "
                                          "(softmax over score + tau x log(1 + training count)); 0 = plain.")

    def sasrec(self) -> SASRecConfig:
        """The equivalent library config."""
        return SASRecConfig(**self.model_dump(exclude=RESUME_FIELDS))


class ContentSASRecTrainingConfig(SASRecTrainingConfig):
    """Content-SASRec settings: SASRec's, plus the content set and how it enters the item table."""

    content: ContentSource = Field(
        default="item_text", description="Frozen content: item_text (MiniLM over the catalog text), item_llm "
        "(frozen LLM, CEX) or item_profile (MiniLM over the RLMRec item profiles, catalog text where none).")
    fusion: Fusion = Field(default="hybrid", description="hybrid = ID + W content; content = W content only; "
                           "init = ID table initialised from the content's PCA; dual = LLM-ESR's two views "
                           "(PCA-initialised ID | W content) through one shared encoder, scores summed.")
    content_init_std: float = 0.02
    popularity_adjustment: PopularityAdjustment = Field(
        default="balanced", description="balanced = subtract beta x log(1 + training count) from the scores, "
        "beta chosen on balanced validation NDCG@10 (all and long-tail users; 0 possible); none = raw scores.")
    # Each beta costs one ranking pass over validation (about 1.2 s on Beauty on the 2 cores): the quick
    # preset tries five, inside the cold `make run` budget; the converged preset the whole default grid.
    popularity_betas: list[float] = Field(default=[0.0, 0.05, 0.1, 0.2, 0.3],
                                          description="The grid `balanced` chooses beta from (0 = no adjustment).")
    # The quick preset's LLM-enhanced model gets the larger share of the cold `make run` budget: it peaks
    # near 1,600 steps (epoch 18 of token-budget batches) on amazon-beauty, but a cold run with every
    # model measured 20 min 7 s at 19 epochs (about 22 s each), so it stops at 16.
    max_steps: int | None = Field(default=1408, description="Optimizer-step budget (16 Beauty epochs; "
                                  "null = max_epochs only).")

    def content_sasrec(self) -> ContentSASRecConfig:
        """The equivalent library config."""
        return ContentSASRecConfig(**self.model_dump(exclude={"content", *RESUME_FIELDS}))


class LEARNTrainingConfig(dg.Config):
    """LEARN settings. The defaults are the CPU shape (`LEARNConfig.cpu_default`); the paper's is 768 x 12 layers."""

    content: Literal["item_text", "item_llm"] = Field(
        default="item_text",
        description="Frozen content embeddings: item_text (MiniLM sentence encoder) or item_llm (frozen LLM, CEX).",
    )
    hidden_dim: int = 128
    n_layers: int = 2
    n_heads: int = 2
    output_dim: int = 64
    max_len: int = 50
    dropout: float = 0.1
    item_tower: Literal["shared", "self_attention_only", "content_projection"] = "shared"
    temperature: float = 0.05
    learn_temperature: bool = True
    zero_init_residual: bool = True
    logq_correction: bool = False
    sampling: bool = Field(default=False, description="Two-stage sampling (the paper's industrial setting).")
    target_span: TargetSpan = Field(
        default="next", description="Target = only the item after the split point (next: the paper's Amazon "
        "setting) or every item after it (rest: its industrial one).")
    n_history_samples: int = 10
    n_target_samples: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 128
    max_epochs: int = Field(default=1000, description="Upper bound; max_steps and early stopping end sooner.")
    max_steps: int | None = Field(default=1400, description="Optimizer-step budget (about 8 Beauty epochs; "
                                  "null = max_epochs only).")
    # Every 2 Beauty epochs: a validation costs about half an epoch here, and the quick budget's best
    # epoch is its last one (validated anyway), so validating every epoch only spends the cold run's time.
    eval_every_steps: int | None = Field(default=350, description="Validate every this many steps (rounded up "
                                         "to whole epochs; 350 = two Beauty epochs); null = every epoch.")
    patience: int = Field(default=3, description="Validations in a row without a better NDCG@10 before stopping.")
    seed: int = 0
    device: str = "auto"

    def learn(self) -> LEARNConfig:
        """The equivalent library config."""
        return LEARNConfig(**self.model_dump(exclude={"content"}))


@training_asset(deps=[USER_SEQUENCES], compute_kind="numpy")
def popularity_model(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, artifacts: ArtifactStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The popularity baseline: items ranked by training interaction count, scored on validation."""
    data = load_split(warehouse, context.partition_key)

    def train(_: EpochCallback) -> TrainingOutcome:
        model = PopularityModel.fit(data.train, data.n_items)
        return TrainingOutcome(model, None, 0, evaluate_model(model.score, *data.history("valid")).metrics)

    return train_tracked(context, mlflow, artifacts, data, POPULARITY, {"model": POPULARITY}, train)


@training_asset(deps=[USER_SEQUENCES])
def sasrec_model(
    context: dg.AssetExecutionContext, config: SASRecTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """SASRec, ID-only with full softmax cross-entropy, trained on the train split (epoch chosen on validation)."""
    data = load_split(warehouse, context.partition_key)
    library_config = config.sasrec()

    resume = config.resume_policy(artifacts, data.dataset, SASREC)

    def train(on_epoch: EpochCallback) -> TrainingOutcome:
        return TrainingOutcome.of(train_sasrec(data, library_config, on_epoch=on_epoch, resume=resume))

    return train_tracked(context, mlflow, artifacts, data, SASREC, asdict(library_config), train)


def _train_on_content(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, artifacts: ArtifactStoreResource,
    mlflow: MlflowResource, name: str, content_key: str, library_config: Any,
    fit: Callable[[SequenceData, np.ndarray, Any, EpochCallback], Any],
) -> dg.MaterializeResult:
    """Train a model that reads a published content set: `fit(data, vectors, config, on_epoch)`, tracked.

    The set's name, version and encoder go to MLflow's params and the checkpoint manifest, so a run
    names exactly the embedding version it read.
    """
    data = load_split(warehouse, context.partition_key)
    stored = read_content(artifacts, data, CONTENT_SETS[content_key])
    content = stored.provenance()

    def train(on_epoch: EpochCallback) -> TrainingOutcome:
        return TrainingOutcome.of(fit(data, np.asarray(stored.vectors), library_config, on_epoch), extra=content)

    return train_tracked(context, mlflow, artifacts, data, name, {**asdict(library_config), **content}, train)


@training_asset(deps=[USER_SEQUENCES, item_text_embeddings, item_llm_embeddings])
def learn_model(
    context: dg.AssetExecutionContext, config: LEARNTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """LEARN's PAL twin tower over frozen content embeddings, dense all-action loss (epoch chosen on validation)."""
    return _train_on_content(context, warehouse, artifacts, mlflow, LEARN, config.content, config.learn(),
                             lambda data, vectors, cfg, on_epoch: train_learn(data, vectors, cfg, on_epoch=on_epoch))


@training_asset(deps=[USER_SEQUENCES, item_text_embeddings, item_llm_embeddings, profile_embeddings])
def content_sasrec_model(
    context: dg.AssetExecutionContext, config: ContentSASRecTrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Content-SASRec: SASRec over an item table fused with frozen LLM-derived content (epoch chosen on validation)."""
    return _train_on_content(
        context, warehouse, artifacts, mlflow, CONTENT_SASREC, config.content, config.content_sasrec(),
        lambda data, vectors, cfg, on_epoch: train_content_sasrec(
            data, vectors, cfg, on_epoch=on_epoch,
            resume=config.resume_policy(artifacts, data.dataset, CONTENT_SASREC)))
