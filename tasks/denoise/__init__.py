"""The bundled count-matrix denoising task (``denoise-v1``); needs numpy."""

from tasks.denoise.task import DenoiseConfig, DenoiseTask, mse_norm, parse_matrix, simulate

__all__ = ["DenoiseConfig", "DenoiseTask", "mse_norm", "parse_matrix", "simulate"]
