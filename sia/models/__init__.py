"""Policy models: the registry and embedded default, tiny test models, the hf backend.

Importing this package is cheap; transformers and peft load only when a model is built,
fetched or served.
"""

from sia.models.errors import (
    AdapterError,
    ChecksumMismatch,
    GenerationError,
    ModelError,
    ModelFetchError,
    ModelLoadError,
    ModelNotCached,
    ModelNotFound,
)
from sia.models.generation import FinishReason, Generation, GenRequest, PolicyBackend, Usage
from sia.models.progress import ProgressCallback, ProgressEvent
from sia.models.registry import DEFAULT_MODEL, list_models, load_model, model_path, resolve
from sia.models.spec import ModelInfo, ModelSpec

__all__ = [
    "DEFAULT_MODEL",
    "AdapterError",
    "ChecksumMismatch",
    "FinishReason",
    "GenRequest",
    "Generation",
    "GenerationError",
    "ModelError",
    "ModelFetchError",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotCached",
    "ModelNotFound",
    "ModelSpec",
    "PolicyBackend",
    "ProgressCallback",
    "ProgressEvent",
    "Usage",
    "list_models",
    "load_model",
    "model_path",
    "resolve",
]
