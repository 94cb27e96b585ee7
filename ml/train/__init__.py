"""Training loops: data batching, optimization and validation-based early stopping per model."""
