"""The bundled mate-in-one task (``chess-v1``)."""

from tasks.chess.task import ChessConfig, ChessTask, parse_move

__all__ = ["ChessConfig", "ChessTask", "parse_move"]
