"""Serving indexes: faiss index builds, verified versioned publishing with rollback, and top-k recommendation."""
