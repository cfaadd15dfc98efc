"""The bundled kernel-optimisation task (``trimul-v1``): a fast triangle multiplicative update."""

from tasks.trimul.sandbox import ENTRY, TOLERANCE, Limits, Outcome, extract_code
from tasks.trimul.task import SOLUTION, TrimulConfig, TrimulTask, reference_source, speedup_reward

__all__ = [
    "ENTRY",
    "SOLUTION",
    "TOLERANCE",
    "Limits",
    "Outcome",
    "TrimulConfig",
    "TrimulTask",
    "extract_code",
    "reference_source",
    "speedup_reward",
]
