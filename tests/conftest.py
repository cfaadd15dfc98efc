"""Fixtures shared across test folders."""

from pathlib import Path

import pytest

from sia.models.tiny import build_tiny


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed-0 tiny model and tokenizer saved as a local model folder (``--policy DIR``)."""
    model, tokenizer = build_tiny(seed=0)
    directory = tmp_path_factory.mktemp("models") / "tiny"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
