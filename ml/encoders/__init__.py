"""Text encoders for content embeddings, and the content-hash cache in front of them."""
