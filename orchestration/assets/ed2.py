"""ED2 training asset: an LLM-backbone generator over the dual dynamic user and item index, tracked like every model.

ED2 reads the split's training sequences and the semantic vectors of `read_llm_semantics`: items from
the frozen LLM's `item_llm` set when it is published (complete), else the MiniLM `item_text` set;
users from `user_profile` (generated profile, else the history-mean fallback). Which set and version
it read, the generated-profile share and the user list's digest go to MLflow's params and the
checkpoint manifest; the final code tables go to the MLflow run as CSV artifacts, and the checkpoint
holds the exact tables its validation metrics were measured with.
"""

from dataclasses import asdict
from typing import Any

import dagster as dg
from pydantic import Field

from ml.data.semantic_vectors import SemanticVectors, UserSource, read_llm_semantics
from ml.data.sequences import SequenceData
from ml.data.versioned import NoCurrentVersion
from ml.models.ed2 import code_tables_csv
from ml.models.ed2_backbone import load_smollm2
from ml.models.ed2_config import Backbone, ED2Config, FineTune, IndexMode, NextItemForm
from ml.models.sasrec import LRSchedule
from ml.tracking.training_runs import TrainingOutcome
from ml.train.early_stopping import EpochCallback
from ml.train.ed2_training import tiny_backbone, train_ed2
from orchestration.assets.embeddings import item_llm_embeddings, item_text_embeddings, profile_embeddings
from orchestration.assets.shared import (
    RESUME_FIELDS,
    USER_SEQUENCES,
    ResumeSettings,
    load_split,
    train_tracked,
    training_asset,
)
from orchestration.resources import ArtifactStoreResource, MlflowResource, WarehouseResource

ED2_MODEL = "ed2"


class ED2TrainingConfig(ResumeSettings):
    """ED2 settings. The defaults are the quick CPU preset: the `tiny` backbone under a step budget.

    Quick: 300 optimizer steps (a quarter of a Beauty epoch), warm-up 50, codes re-assigned every 100
    steps, prompts of the last 10 history items, beam 10, validated once at the end. Bounded so that
    the cold `make run` keeps its 20-minute budget: each step costs about 0.4 s on Beauty on the 2
    cores, and each beam search over its 22k users (validation, then test) about 40 s. The
    converged preset trains whole epochs on the paper's 20-item prompts with a beam of 20 until
    validation stalls.
    """

    user_source: UserSource = Field(default="profiles", description="profiles = the user_profile embeddings "
                                    "(history-mean fallback where none was generated); history_mean = that "
                                    "fallback for every user, without the profile stage.")
    backbone: Backbone = Field(default="tiny", description="tiny = random-init Llama (CPU); smollm2 = the packaged "
                               "SmolLM2-135M with the index tokens added (for a GPU).")
    hidden_dim: int = Field(default=128, description="Width of the tiny backbone.")
    n_layers: int = 2
    n_heads: int = 4
    intermediate_dim: int = Field(default=512, description="Feed-forward width of the tiny backbone (4 x d).")
    finetune: FineTune = Field(default="full", description="smollm2: full fine-tune or LoRA.")
    lora_rank: int = 8
    lora_alpha: float = 16.0
    levels: int = Field(default=4, description="M: index tokens per user and item.")
    codebook_size: int = Field(default=64, description="N: values per index token.")
    latent_dim: int = 64
    quantizer_hidden: int = 256
    commitment_weight: float = 0.25
    index: IndexMode = Field(default="dynamic", description="dynamic = quantisers trained with the recommender, "
                             "codes re-assigned; static = quantisers pre-trained, then frozen (ablation).")
    reassign_every: int = Field(default=1, description="Epochs between code re-assignments (dynamic index).")
    reassign_every_steps: int | None = Field(default=100, description="Steps between re-assignments instead of "
                                             "epochs: the quick budget is a quarter of a Beauty epoch (null = epochs).")
    max_reassignments: int | None = Field(default=None, description="Freeze the index after this many "
                                          "re-assignments (quantisers' rate 0, codes kept), as the authors re-index "
                                          "once; null = dynamic to the end.")
    latent_pull: float = Field(default=0.0, description="Dynamic index: weight of the recommendation loss's gradient "
                               "on each entity's quantiser latent (straight-through; 0 = off, the default: 1 "
                               "collapsed the index and 0.1 scored lower on movielens).")
    quantizer_pretrain_steps: int = Field(default=300, description="Minibatch RQ-VAE steps before the LM trains.")
    quantizer_lr: float = Field(default=1e-3, description="Learning rate of the quantisers' pre-training.")
    index_lr: float | None = Field(default=1e-4, description="Learning rate of the quantisers while the recommender "
                                   "trains (dynamic index); null = quantizer_lr. A tenth of it: the codes churn less "
                                   "(measured on movielens: 34% of the items' codes per re-assignment, not 59%).")
    index_regulator_weight: float = Field(default=1.0, description="Index-level regulator (0 = off).")
    token_regulator_weight: float = Field(default=1.0, description="Token-level regulator (0 = off).")
    regulator_temperature: float = 0.1
    regulator_entities: int = Field(default=256, description="Items and users per step in the regulators.")
    next_item_form: NextItemForm = Field(default="prompts", description="prompts = one next-item prompt per "
                                         "training position; sequences = one per window of max_len + 1 items, "
                                         "every history item after the first a target too (decoding unchanged).")
    user_task_ratio: float = Field(default=0.25, description="User-prediction examples per next-item example "
                                   "(0 = no user task).")
    user_context: int = 10
    max_len: int = Field(default=10, description="History items in a prompt (the paper's 20 when converged).")
    beam_size: int = Field(default=10, description="Beam (items ranked before the tied rest); 20 when converged.")
    lr: float = 1e-3
    warmup_steps: int = 50
    lr_schedule: LRSchedule = Field(default="constant", description="constant = warm-up, then flat; inverse_sqrt = "
                                    "warm-up, then lr x sqrt(warmup / step); cosine = decay to 0 at the step budget.")
    weight_decay: float = 0.0
    batch_size: int = 128
    bucket_batches: int = 32
    eval_batch_size: int = 256
    max_epochs: int = Field(default=100, description="Upper bound; max_steps and early stopping end sooner.")
    max_steps: int | None = Field(default=300, description="Optimizer-step budget (null = max_epochs only).")
    eval_every_steps: int | None = Field(default=300, description="Validate every this many steps (rounded up to "
                                         "whole epochs); null = every eval_every epochs.")
    eval_every: int = 1
    patience: int = 5
    seed: int = 0
    device: str = "auto"

    def ed2(self) -> ED2Config:
        """The equivalent library config."""
        return ED2Config(**self.model_dump(exclude={"user_source", *RESUME_FIELDS}))


def read_semantics(artifacts: ArtifactStoreResource, data: SequenceData, user_source: UserSource) -> SemanticVectors:
    """ED2's semantic vectors; a Dagster failure saying what to materialize when a set is missing."""
    try:
        return read_llm_semantics(artifacts.embeddings_root(), data, user_source)
    except NoCurrentVersion as missing:
        raise dg.Failure(f"ED2 needs published item_text (or item_llm) and user_profile embeddings of "
                         f"{data.dataset}: materialize item_text_embeddings and profile_embeddings first") from missing


@training_asset(deps=[USER_SEQUENCES, item_text_embeddings, item_llm_embeddings, profile_embeddings])
def ed2_model(
    context: dg.AssetExecutionContext, config: ED2TrainingConfig, warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource, mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """ED2: an LM generates the next item's index over a dual dynamic user/item index; epoch chosen on validation."""
    data = load_split(warehouse, context.partition_key)
    library_config = config.ed2()
    semantics = read_semantics(artifacts, data, config.user_source)
    provenance: dict[str, Any] = {"user_ids_digest": data.user_ids_digest(), **semantics.provenance}
    backbone = tiny_backbone if library_config.backbone == "tiny" else \
        (lambda cfg: load_smollm2(cfg, artifacts.model_cache_dir()))

    def train(on_epoch: EpochCallback) -> TrainingOutcome:
        result = train_ed2(data, semantics.items, semantics.users, library_config, on_epoch=on_epoch,
                           backbone=backbone, resume=config.resume_policy(artifacts, data.dataset, ED2_MODEL))
        return TrainingOutcome.of(result, extra=provenance,
                                  artifact_texts=code_tables_csv(result.model, data.item_ids, data.user_ids))

    return train_tracked(context, mlflow, artifacts, data, ED2_MODEL, {**asdict(library_config), **provenance}, train)
