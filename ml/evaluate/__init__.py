"""Evaluation: one full-ranking, leave-one-out evaluator shared by every model."""
