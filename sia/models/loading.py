"""Loading a Hugging Face model directory into a causal LM and its tokenizer.

Every transformers failure is translated here into :class:`ModelLoadError`, so callers see
one line naming the directory instead of a stack of hub and config internals.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sia.models.errors import ModelLoadError, describe

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["count_safetensors_params", "load_directory", "quiet_transformers"]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars and info logs for the duration of the block.

    The caller reports progress through its own callback; transformers' tqdm bars on stderr
    would interleave with a CLI's bar.
    """
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_were_on:
            hf_logging.enable_progress_bar()


def load_directory(
    path: Path, *, device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory, in float32, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a model directory (no config.json)")
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=torch.float32
            )
    # transformers, tokenizers and safetensors raise unrelated exception types for a broken
    # directory; the caller only needs to know which directory and why.
    except Exception as error:
        raise ModelLoadError(f"cannot load model from {path}: {describe(error)}") from error
    try:
        model.to(device)
    except (RuntimeError, ValueError) as error:
        raise ModelLoadError(
            f"cannot move model to device {device!r}: {describe(error)}"
        ) from error
    model.eval()
    return model, tokenizer


def count_safetensors_params(path: Path) -> int | None:
    """Number of parameters in a directory's ``*.safetensors`` files, read from headers only.

    Returns ``None`` when the directory has no safetensors files or a header is unreadable,
    so listing models never loads weights.
    """
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        try:
            with file.open("rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                # A corrupt length prefix must not make us read gigabytes.
                if size > file.stat().st_size - 8:
                    return None
                header = json.loads(handle.read(size))
        except (OSError, ValueError, struct.error):
            return None
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in entry.get("shape", []):
                count *= int(dim)
            total += count
    return total or None
