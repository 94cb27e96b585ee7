"""The training presets: override layers over the library configs' defaults, keyed by training asset.

Each model's defaults live once, in its library dataclass (`ml/models/`). "quick" (`QUICK_DEFAULTS`)
is the layer the training assets' Dagster configs are built with (`orchestration/asset_config.py`), so a
plain materialization, the launchpad and a cold `make run` train it: step budgets that keep a cold
`make run` under 20 minutes on 2 CPU cores, and that give a small dataset as many updates as a large
one. "converged" and "tiny" are Dagster run config over quick: converged lifts the budgets and lets
early stopping decide, for unattended runs (the weekly retrain) and the training benchmark; tiny is
the smoke run of the whole graph. Every value here was chosen on validation (docs/defaults.md);
measured figures are in benchmarks/README.md.
"""

from collections.abc import Sequence
from typing import Any

from ml.models.selection_grids import DEFAULT_BLEND_WEIGHTS, DEFAULT_POPULARITY_BETAS

# Token-budget batches (`positions`): about 0.6x the time of a shuffled epoch for about 0.85x its progress, so
# more learning per minute, under a step budget validated every `eval_every_steps`, so that a 943-user dataset
# (4 steps per epoch) gets as many updates as a 22k-user one. max_epochs is only an upper bound.
_QUICK_SASREC_FAMILY = {"batching": "positions", "bucket_batches": 32, "max_epochs": 1000, "eval_every_steps": 176}
QUICK_DEFAULTS: dict[str, dict[str, Any]] = {
    # 10 Beauty epochs (88 steps each): the cold `make run` with every model in it measured 22 min with 12, and
    # the ID-only quick baseline gives up the least of the cuts that bring it under 20.
    "sasrec_model": {**_QUICK_SASREC_FAMILY, "max_steps": 880},
    # The LLM-enhanced model gets the larger share of the budget: it peaks near 1,600 steps (epoch 18) on
    # amazon-beauty, but a cold run with every model measured 20 min 7 s at 19 epochs (about 22 s each), so it
    # stops at 16 (1,408 steps). Each beta costs one ranking pass over validation (about 1.2 s on Beauty on the
    # 2 cores): five here, the library's whole grid in the converged preset.
    "content_sasrec_model": {**_QUICK_SASREC_FAMILY, "max_steps": 1408,
                             "popularity_betas": [0.0, 0.05, 0.1, 0.2, 0.3]},
    # About 8 Beauty epochs, validated every 2 (350 steps): a validation costs about half an epoch here, and the
    # quick budget's best epoch is its last one (validated anyway). The shape is `LEARNConfig.cpu_default()`.
    "learn_model": {"max_epochs": 1000, "max_steps": 1400, "eval_every_steps": 350, "patience": 3},
    # The paper's shape but 2 decoder layers instead of 4 (half the decoding cost), a beam of 10 per stream, a
    # 100-step warm-up and 300 steps, validated once at the end. Exact, not rounded up to a whole epoch (514 steps
    # on Beauty): the quick EAGER is not the model `make run` selects, and its 20-minute cold budget cannot spare
    # the other 214 steps (70 s). One movielens epoch already beats popularity on validation.
    "eager_model": {"decoder_layers": 2, "beam_size": 10, "warmup_steps": 100, "max_epochs": 1000, "max_steps": 300,
                    "eval_every_steps": 300},
    # The paper's learning rate, 1e-3, learns too slowly for a bounded budget: on amazon-beauty LightGCN's
    # validation R@10 was 0.0485 after 20 epochs with 1e-3, and 0.0610 after 10 with 1e-2 (which peaks at epoch
    # 15). 380 steps are 10 Beauty epochs of 38, to bound the three graph assets' share of the cold run.
    **{asset: {"lr": 1e-2, "max_steps": 380} for asset in ("graph_cf_model", "rlmrec_con_model", "rlmrec_gen_model")},
    # 300 optimizer steps (a quarter of a Beauty epoch), codes re-assigned every 100, prompts of the last 10 history
    # items, beam 10, validated once at the end: each step costs about 0.4 s on Beauty on the 2 cores, and each beam
    # search over its 22k users (validation, then test) about 40 s.
    "ed2_model": {"max_len": 10, "beam_size": 10, "warmup_steps": 50, "eval_batch_size": 256, "max_steps": 300,
                  "eval_every_steps": 300, "reassign_every_steps": 100},
    # 3 x 3 pairs, each a ranking pass over validation (about 2 s on amazon-beauty on the 2 cores).
    "blend_model": {"weights": [0.0, 0.5, 1.0], "betas": [0.0, 0.1, 0.2]},
}

# The reference recipe (shuffled batches of 256 users) with a budget far beyond where validation stalls.
_CONVERGED_SASREC = {"batching": "users", "bucket_batches": 1, "max_steps": 40_000}
TRAINING_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {},  # QUICK_DEFAULTS are the configs' defaults: no run config on top
    # One-layer models, a few epochs or steps: the smoke run of the whole graph (tests, and `make run PRESET=tiny
    # CONFIG=tests/orchestration/tiny_run_config.yaml` for a run in about five minutes), no quality claim. SASRec gets
    # enough epochs to beat popularity on validation, so the blocking check lets it publish.
    "tiny": {
        "sasrec_model": {"n_layers": 1, "n_heads": 1, "max_len": 20, "hidden_dim": 32, "batch_size": 128,
                         "max_epochs": 20, "patience": 20, "max_steps": 200, "eval_every_steps": None},
        "content_sasrec_model": {"n_layers": 1, "n_heads": 1, "max_len": 20, "max_epochs": 2, "patience": 2,
                                 "hidden_dim": 16, "batch_size": 128, "max_steps": None, "eval_every_steps": None,
                                 "eval_every": 1},
        "learn_model": {"n_layers": 1, "n_heads": 1, "max_len": 20, "max_epochs": 2, "patience": 2, "hidden_dim": 16,
                        "output_dim": 16, "batch_size": 128, "eval_every_steps": None},
        "eager_model": {"hidden_dim": 16, "n_heads": 2, "decoder_layers": 1, "feedforward_dim": 32, "beam_size": 5,
                        "batch_size": 512, "max_epochs": 1, "max_steps": None, "eval_every_steps": None,
                        "eval_batch_size": 512},
        **{asset: {"dim": 8, "n_layers": 2, "lr": 0.01, "max_epochs": 2, "eval_every": 1}
           for asset in ("graph_cf_model", "rlmrec_con_model", "rlmrec_gen_model")},
        "ed2_model": {"hidden_dim": 16, "n_layers": 1, "n_heads": 2, "intermediate_dim": 32, "codebook_size": 32,
                      "latent_dim": 16, "quantizer_hidden": 64, "quantizer_pretrain_steps": 100, "max_len": 5,
                      "beam_size": 5, "batch_size": 64, "max_steps": 20, "eval_every_steps": 20,
                      "eval_batch_size": 256},
    },
    "converged": {
        "sasrec_model": _CONVERGED_SASREC,
        # The fusion stays the library's hybrid, the validation winner when both are converged (NDCG@10 0.0530
        # against LLM-ESR's dual view at 0.0528; benchmarks/README.md); dual is one config value away.
        "content_sasrec_model": {**_CONVERGED_SASREC, "popularity_betas": list(DEFAULT_POPULARITY_BETAS)},
        "learn_model": {"max_steps": 7000, "patience": 10},  # about 40 Beauty epochs
        # The library's full grids (7 x 9 validation ranking passes, about 90 s on Beauty on the 2 cores).
        "blend_model": {"weights": list(DEFAULT_BLEND_WEIGHTS), "betas": list(DEFAULT_POPULARITY_BETAS)},
        # The paper's shape; validation every 2 Beauty epochs (1,028 steps), until 5 validations bring nothing.
        # Early stopping decides (Beauty peaks near epoch 15-20 at lr 1e-2, movielens after 100).
        **{asset: {"max_steps": None, "max_epochs": 400} for asset in
           ("graph_cf_model", "rlmrec_con_model", "rlmrec_gen_model")},
        # The authors' released training (yewzz/EAGER): per-parent last-level tokens (the default), 2 decoder layers,
        # GCT and STT off, inverse-square-root decay after a linear warm-up; a beam of 20. 24,000 steps (47 Beauty
        # epochs at 181 ms a step on 2 cores) keep a Beauty run near 80 minutes with a validation every 2 epochs
        # (1,028 steps); early stopping ends it sooner once 5 validations bring nothing.
        "eager_model": {"decoder_layers": 2, "beam_size": 20, "stt_weight": 0.0, "gct_weight": 0.0,
                        "lr_schedule": "inverse_sqrt", "warmup_steps": 1000, "max_steps": 24_000,
                        "eval_every_steps": 1028},
        # The authors' schedule on the tiny backbone: one causal sequence per user (a loss on every item's codes),
        # codes re-assigned before epochs 2 and 3 only, then a frozen index and cosine decay to 0 at epoch 14;
        # 20-item windows and a beam of 20, validated every 2 epochs (a Beauty validation is about 2.5 min on
        # 1 thread). Measured against the prompt form on Beauty in benchmarks/README.md.
        "ed2_model": {"next_item_form": "sequences", "max_reassignments": 2, "lr_schedule": "cosine",
                      "max_epochs": 14, "eval_every": 2, "max_steps": None, "eval_every_steps": None,
                      "reassign_every_steps": None, "max_len": 20, "beam_size": 20, "warmup_steps": 100},
    },
}


PRESET_NAMES: tuple[str, ...] = tuple(sorted(TRAINING_PRESETS))


def converged_assets() -> list[str]:
    """The training assets the converged preset overrides (those `--quick-assets` may keep quick)."""
    return sorted(TRAINING_PRESETS["converged"])


def preset_run_config(preset: str, keep_quick: Sequence[str] = ()) -> dict[str, Any]:
    """The Dagster run config of a training preset: each training asset's overrides of its defaults.

    `keep_quick` names training assets that keep the quick defaults under this preset, e.g. the
    converged run of every model but EAGER, whose converged preset takes hours on CPU.
    """
    if preset not in TRAINING_PRESETS:
        raise ValueError(f"unknown training preset {preset!r}; known: {sorted(TRAINING_PRESETS)}")
    unknown = sorted(set(keep_quick) - set(TRAINING_PRESETS["converged"]))
    if unknown:
        raise ValueError(f"not training assets: {unknown}; known: {sorted(TRAINING_PRESETS['converged'])}")
    return {"ops": {asset: {"config": dict(overrides)} for asset, overrides in TRAINING_PRESETS[preset].items()
                    if asset not in keep_quick}}
