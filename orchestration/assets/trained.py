"""Every training asset, in one list: the definitions load them and evaluation scores each one's checkpoint.

A training asset `<name>_model` writes the checkpoint `<name>` (`checkpoint_name`); adding a model means
adding its asset here, once.
"""

import dagster as dg

from orchestration.assets.blend import blend_model
from orchestration.assets.ed2 import ed2_model
from orchestration.assets.generative import eager_model
from orchestration.assets.graph_cf import graph_cf_model, rlmrec_con_model, rlmrec_gen_model
from orchestration.assets.shared import checkpoint_name
from orchestration.assets.training import content_sasrec_model, learn_model, popularity_model, sasrec_model

# The order of the results table.
TRAINING_ASSETS: tuple[dg.AssetsDefinition, ...] = (
    popularity_model, sasrec_model, content_sasrec_model, learn_model, eager_model, blend_model,
    graph_cf_model, rlmrec_con_model, rlmrec_gen_model, ed2_model,
)
TRAINED_MODELS: tuple[str, ...] = tuple(checkpoint_name(asset.key) for asset in TRAINING_ASSETS)
