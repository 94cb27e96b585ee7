"""ED2's typed settings: backbone, index, regulators, user task, decoding and optimisation, validated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ml.models.residual_quantizer import QuantizerConfig
from ml.models.sasrec import LRSchedule, check_lr_schedule
from ml.models.settings import (
    DEVICE,
    EVAL_EVERY,
    EVAL_EVERY_STEPS,
    MAX_EPOCHS,
    PATIENCE,
    STEP_BUDGET,
    WARMUP_LR_SCHEDULE,
    setting,
)

Backbone = Literal["tiny", "smollm2"]
FineTune = Literal["full", "lora"]
IndexMode = Literal["dynamic", "static"]
# prompts: one next-item prompt per training position, each re-encoding its history; sequences: one prompt per
# window of max_len + 1 items with a loss on every history item's index after the first as well (one causal
# pass serves up to max_len targets), decoding still from the prompt.
NextItemForm = Literal["prompts", "sequences"]


@dataclass(frozen=True)
class ED2Config:
    """Backbone, index, regulators, user task, decoding and optimisation settings of ED2."""

    backbone: Backbone = setting("tiny", "tiny = random-init Llama (CPU); smollm2 = the packaged SmolLM2-135M "
                                 "with the index tokens added (for a GPU).")
    hidden_dim: int = setting(128, "Width of the tiny backbone (SmolLM2's is 576).")
    n_layers: int = 2
    n_heads: int = 4
    intermediate_dim: int = setting(512, "Feed-forward width of the tiny backbone (4 x d).")
    finetune: FineTune = setting("full", "smollm2: full fine-tune or LoRA on the attention projections.")
    lora_rank: int = 8
    lora_alpha: float = 16.0
    levels: int = setting(4, "M: index tokens per user and item.")
    codebook_size: int = setting(64, "N: values per index token.")
    latent_dim: int = 64
    quantizer_hidden: int = 256
    commitment_weight: float = 0.25
    index: IndexMode = setting("dynamic", "dynamic = quantisers trained with the recommender, codes re-assigned; "
                               "static = quantisers pre-trained, then frozen (ablation).")
    reassign_every: int = setting(1, "Epochs between code re-assignments (dynamic index).")
    reassign_every_steps: int | None = setting(None, "Steps between re-assignments instead of epochs, for budgets "
                                               "under an epoch (null = epochs).")
    # The authors re-index once, then fine-tune on the frozen index.
    max_reassignments: int | None = setting(None, "Freeze the index after this many re-assignments (quantisers' "
                                            "rate 0, codes kept); null = dynamic to the end.")
    # 1 collapsed the index and 0.1 scored lower on movielens.
    latent_pull: float = setting(0.0, "Dynamic index: weight of the recommendation loss's gradient on each "
                                 "entity's quantiser latent (straight-through; 0 = off).")
    quantizer_pretrain_steps: int = setting(300, "Minibatch RQ-VAE steps before the LM trains (both index modes).")
    quantizer_lr: float = setting(1e-3, "Learning rate of the quantisers' pre-training.")
    # A tenth of quantizer_lr: the codes churn less (measured on movielens: 34% of the items' codes per
    # re-assignment, not 59%).
    index_lr: float | None = setting(1e-4, "Learning rate of the quantisers while the recommender trains "
                                     "(dynamic index); null = quantizer_lr.")
    index_regulator_weight: float = setting(1.0, "Index-level regulator (0 = off).")
    token_regulator_weight: float = setting(1.0, "Token-level regulator (0 = off).")
    regulator_temperature: float = 0.1
    regulator_entities: int = setting(256, "Items and users per step in the regulators (at most).")
    next_item_form: NextItemForm = setting("prompts", "prompts = one next-item prompt per training position; "
                                           "sequences = one per window of max_len + 1 items, every history item "
                                           "after the first a target too (decoding unchanged).")
    user_task_ratio: float = setting(0.25, "User-prediction examples per next-item example (0 = no user task).")
    user_context: int = setting(10, "Users shown in a user-prediction prompt.")
    max_len: int = setting(20, "History items in a prompt.")
    beam_size: int = setting(20, "Beam (items ranked before the tied rest).")
    lr: float = 1e-3
    warmup_steps: int = 100
    # The authors' is cosine (to 0 at the step budget); constant keeps the quick preset's measured figures.
    lr_schedule: LRSchedule = setting("constant", WARMUP_LR_SCHEDULE)
    weight_decay: float = 0.0
    batch_size: int = 128
    bucket_batches: int = 32
    eval_batch_size: int = 128
    max_epochs: int = setting(100, MAX_EPOCHS)
    max_steps: int | None = setting(None, STEP_BUDGET)
    eval_every: int = setting(1, EVAL_EVERY)
    eval_every_steps: int | None = setting(None, EVAL_EVERY_STEPS)
    patience: int = setting(5, PATIENCE)
    seed: int = 0
    device: str = setting("auto", DEVICE)

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "n_layers", "n_heads", "intermediate_dim", "lora_rank", "levels",
                     "latent_dim", "quantizer_hidden", "reassign_every", "regulator_entities", "user_context",
                     "max_len", "beam_size", "batch_size", "bucket_batches", "eval_batch_size", "max_epochs",
                     "max_steps", "eval_every", "eval_every_steps", "patience", "reassign_every_steps",
                     "max_reassignments"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.codebook_size < 2:
            raise ValueError("codebook_size must be at least 2")
        if self.hidden_dim % self.n_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by n_heads ({self.n_heads})")
        for name in ("index_regulator_weight", "token_regulator_weight", "user_task_ratio", "weight_decay",
                     "warmup_steps", "quantizer_pretrain_steps", "commitment_weight", "latent_pull"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.index_lr is not None and self.index_lr <= 0:
            raise ValueError("index_lr must be positive (or None for quantizer_lr)")
        if self.regulator_temperature <= 0:
            raise ValueError("regulator_temperature must be positive")
        check_lr_schedule(self.lr_schedule, self.warmup_steps)
        if self.latent_pull > 0 and self.next_item_form == "sequences":
            raise ValueError("latent_pull reads a next-item answer per prompt: use next_item_form 'prompts' with it")
        if self.backbone not in ("tiny", "smollm2") or self.index not in ("dynamic", "static") or \
                self.finetune not in ("full", "lora") or self.next_item_form not in ("prompts", "sequences"):
            raise ValueError(f"unknown backbone / index / finetune / next_item_form: {self.backbone}, {self.index}, "
                             f"{self.finetune}, {self.next_item_form}")

    def quantizer(self) -> QuantizerConfig:
        """The shape of each of the two quantisers."""
        return QuantizerConfig(levels=self.levels, codebook_size=self.codebook_size, latent_dim=self.latent_dim,
                               hidden_dim=self.quantizer_hidden, commitment_weight=self.commitment_weight)
