"""The RL algorithms, one module each; :mod:`rl.registry` maps their names to them."""

from rl.algorithms.base import Algorithm, AlgorithmConfig, ScoredSample
from rl.algorithms.bon_bc import BestOfNBC, BestOfNConfig
from rl.algorithms.dpo import DPO, DPOConfig, Pair
from rl.algorithms.entropic import Entropic, EntropicConfig
from rl.algorithms.grpo import GRPO, GRPOConfig
from rl.algorithms.ppo_gae import PPOGAE, PPOGAEConfig
from rl.algorithms.reinforce_kl import ReinforceKL, ReinforceKLConfig

__all__ = [
    "DPO",
    "GRPO",
    "PPOGAE",
    "Algorithm",
    "AlgorithmConfig",
    "BestOfNBC",
    "BestOfNConfig",
    "DPOConfig",
    "Entropic",
    "EntropicConfig",
    "GRPOConfig",
    "PPOGAEConfig",
    "Pair",
    "ReinforceKL",
    "ReinforceKLConfig",
    "ScoredSample",
]
