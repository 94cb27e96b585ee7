"""The grids validation chooses from after training (no torch import, so presets and the CLI load fast)."""

# beta of "balanced" popularity adjustment, score - beta x log(1 + training count) (ml/train/popularity_adjustment.py).
DEFAULT_POPULARITY_BETAS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
# The content model's weight in the served blend of two scorers (`ml/models/blend.py`).
DEFAULT_BLEND_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
