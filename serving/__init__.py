"""The HTTP recommendation service over the published faiss indexes (FastAPI, served by uvicorn).

It reads only the index versions under `<data dir>/indexes` and the model checkpoints they name, never
the DuckDB warehouse, so it answers while a pipeline run holds the warehouse's lock.
"""
