"""The model gateway: an OpenAI-compatible loopback endpoint that batches, budgets and records
every harness call to the policy backend."""

from sia.gateway.backend import Backend
from sia.gateway.batcher import MicroBatcher
from sia.gateway.episodes import EpisodeTicket
from sia.gateway.errors import GatewayError
from sia.gateway.server import EPISODE_HEADER, Gateway

__all__ = ["EPISODE_HEADER", "Backend", "EpisodeTicket", "Gateway", "GatewayError", "MicroBatcher"]
