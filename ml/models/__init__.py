"""Sequential recommendation models (ID-based baselines and their LLM-enhanced variants)."""
