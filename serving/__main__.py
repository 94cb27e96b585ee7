"""`python -m serving`: run the service under uvicorn (127.0.0.1:8000 unless told otherwise)."""

from __future__ import annotations

import argparse
import logging

import faiss
import torch
import uvicorn

from serving.app import create_app
from serving.settings import ServingSettings


def main(argv: list[str] | None = None) -> int:
    """Parse the bind address, refuse a non-loopback bind without a token, and serve until stopped."""
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServingSettings.from_env(host=args.host, port=args.port)
    try:
        settings.require_token_off_loopback()
    except ValueError as error:
        parser.error(str(error))
    # Requests run concurrently in uvicorn's thread pool: one torch and one faiss (OpenMP) thread each, not
    # every request's parallel region fighting over the same cores.
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
