"""Reinforcement learning on LoRA adapters: advantage estimators, losses and trainers.

Modules, each named for what it holds:

- ``rl.data`` — :class:`Sample` (a recorded rollout) and grouping; no torch.
- ``rl.errors`` — :class:`RLError`, :class:`RLConfigError`.
- ``rl.lora`` — :class:`LoraSettings`, attaching/saving adapters (peft imported lazily).
- ``rl.registry`` — ``ALGORITHMS`` (name → class), ``algorithm_config``; no torch.
- ``rl.algorithms.<name>`` — one config dataclass + one algorithm class each.
- ``rl.batch``, ``rl.logprobs``, ``rl.advantages``, ``rl.losses`` — tensor numerics.
- ``rl.policy`` — the model as algorithms see it (reference = adapter disabled).
- ``rl.train`` — :func:`train_lora`, :class:`TrainResult`.
- ``rl.distributed`` — data parallel: how ranks share a step (exactly the one-process step).
- ``rl.job``, ``rl.worker``, ``rl.launch`` — :func:`train_distributed`: a job directory,
  ``python -m rl.worker`` per rank under torchrun, the result read back; no torch in
  ``rl.job``.

This package imports nothing heavy itself; import the module you need.
"""

__all__: list[str] = []
