"""Reinforcement learning on LoRA adapters: advantage estimators, losses and trainers.

No algorithm ships yet, so runs in mode ``w`` or ``w+h`` are refused before they start.
"""

__all__: list[str] = []
