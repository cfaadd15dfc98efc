"""Meta and Feedback agents. ``offline`` is the deterministic, network-free default."""

from sia.agents.diagnostics import Diagnostics, Thresholds, diagnose
from sia.agents.errors import AgentError
from sia.agents.offline import RuleFeedbackAgent, TemplateMetaAgent
from sia.agents.operators import HarnessEdit, Operator

__all__ = [
    "AgentError",
    "Diagnostics",
    "HarnessEdit",
    "Operator",
    "RuleFeedbackAgent",
    "TemplateMetaAgent",
    "Thresholds",
    "diagnose",
]
