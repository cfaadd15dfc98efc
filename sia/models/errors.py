"""Errors raised by the model layer: fetching, loading, generating and adapters.

Third-party failures (pip, transformers, peft, zip files) are caught where they happen and
re-raised as one of these with a single line that names what failed and what to do.
"""

from statemachine.errors import SiaError

__all__ = [
    "AdapterError",
    "AdaptersUnsupported",
    "ChecksumMismatch",
    "GenerationError",
    "ModelError",
    "ModelFetchError",
    "ModelLoadError",
    "ModelNotCached",
    "ModelNotFound",
    "PromptTooLong",
    "describe",
]


class ModelError(SiaError):
    """Base class of every error raised by ``sia.models``."""


class ModelNotFound(ModelError):
    """A model name that is neither registered nor a directory holding a model."""


class ModelNotCached(ModelError):
    """A registered model that has not been fetched yet while fetching was not allowed."""


class ModelFetchError(ModelError):
    """Downloading or unpacking a model's source failed."""


class ChecksumMismatch(ModelFetchError):
    """A downloaded or installed file whose sha256 is not the one pinned for it."""


class ModelLoadError(ModelError):
    """A model or tokenizer directory that transformers cannot load."""


class GenerationError(ModelError):
    """A generation request that cannot be served (bad prompt, too long, no chat template)."""


class PromptTooLong(GenerationError):
    """A prompt that leaves no room for a single token in the model's context: the
    request's fault, so the gateway answers 400 (which OpenAI clients do not retry)."""


class AdapterError(ModelError):
    """Loading, selecting or removing a LoRA adapter failed."""


class AdaptersUnsupported(AdapterError):
    """A backend that serves a fixed remote model (``openai``): it cannot load, select or
    train adapters. A subclass of :class:`AdapterError` so callers that already handle
    adapter failures handle this one too."""


def describe(error: BaseException) -> str:
    """The first line of a third-party error's message, for a one-line :class:`ModelError`."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
