"""ED2's typed settings: backbone, index, regulators, user task, decoding and optimisation, validated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ml.models.residual_quantizer import QuantizerConfig
from ml.models.sasrec import LRSchedule, check_lr_schedule

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

    backbone: Backbone = "tiny"
    hidden_dim: int = 128  # tiny backbone only (SmolLM2's is 576)
    n_layers: int = 2
    n_heads: int = 4
    intermediate_dim: int = 512
    finetune: FineTune = "full"  # smollm2: full fine-tune or LoRA on the attention projections
    lora_rank: int = 8
    lora_alpha: float = 16.0
    levels: int = 4  # M
    codebook_size: int = 64  # N
    latent_dim: int = 64
    quantizer_hidden: int = 256
    commitment_weight: float = 0.25
    index: IndexMode = "dynamic"
    reassign_every: int = 1  # epochs between code re-assignments (dynamic index)
    reassign_every_steps: int | None = None  # when set, steps between re-assignments instead (budgets under an epoch)
    # After this many re-assignments the index freezes: no more re-assignments and the quantisers stop learning
    # (the authors re-index once, then fine-tune on the frozen index). None = dynamic to the end.
    max_reassignments: int | None = None
    latent_pull: float = 0.0  # dynamic index: weight of the recommendation loss's gradient on each entity's latent
    quantizer_pretrain_steps: int = 300  # minibatch steps before the recommender trains (both index modes)
    quantizer_lr: float = 1e-3  # pre-training
    index_lr: float | None = 1e-4  # the quantisers while the recommender trains (dynamic index); None = quantizer_lr
    index_regulator_weight: float = 1.0
    token_regulator_weight: float = 1.0
    regulator_temperature: float = 0.1
    regulator_entities: int = 256  # at most this many items and users per step in the regulators
    next_item_form: NextItemForm = "prompts"
    user_task_ratio: float = 0.25  # user-prediction examples per next-item example (prompt or window)
    user_context: int = 10  # users shown in a user-prediction prompt
    max_len: int = 20  # history items in a prompt
    beam_size: int = 20
    lr: float = 1e-3
    warmup_steps: int = 100
    # The authors' is cosine (to 0 at the step budget); constant keeps the quick preset's measured figures.
    lr_schedule: LRSchedule = "constant"
    weight_decay: float = 0.0
    batch_size: int = 128
    bucket_batches: int = 32
    eval_batch_size: int = 128
    max_epochs: int = 100
    max_steps: int | None = None
    eval_every: int = 1
    eval_every_steps: int | None = None
    patience: int = 5
    seed: int = 0
    device: str = "auto"

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
