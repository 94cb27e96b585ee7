"""Discrete item codes for generative retrieval (EAGER's hierarchical k-means identifiers)."""
