"""LLM user and item profiles (RLMRec): prompts, output parsing and the profile cache."""
