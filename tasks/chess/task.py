"""``chess-v1``: find a mate in one, scored by whether the returned move really mates.

Positions are generated, not sampled from a game database, so the task needs nothing but
python-chess and a seed: each item starts from a mating pattern (back-rank mate, king and
queen against a king on the edge, a rook ladder, a smothered mate, the Arabian mate) with
its pieces placed at random, a few unrelated pieces sprinkled in, and a random mirror
image and colour swap. A candidate is kept only when python-chess confirms it: the
position is legal and not already over, the side to move is not in check, and at least
one of its moves mates. The reward replays the answer on the board, so every mating move
counts, not just the one stored as the item's answer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import chess

from tasks.base import Item, Splits, Task, check_split_sizes, template_files
from tasks.errors import TaskError

__all__ = ["PATTERNS", "ChessConfig", "ChessTask", "mating_moves", "parse_move"]

#: Upper bound on the items one configuration may ask for, to keep generation fast.
_MAX_ITEMS = 5_000
#: Rejected candidates allowed per accepted item before generation gives up.
_ATTEMPTS_PER_ITEM = 400
#: A leading move number ("1.", "1 .", "12...") some replies put before the move.
_MOVE_NUMBER = re.compile(r"^[0-9]+\s*\.+\s*")
#: Annotation a reply may append to a move ("Qh7#", "Qh7+!", "Qh7.").
_ANNOTATION = "#+!?. "

Builder = Callable[[random.Random], chess.Board]


def parse_move(board: chess.Board, text: Any) -> chess.Move | None:
    """The legal move ``text`` spells on ``board`` (SAN or UCI), or ``None``; never raises.

    Tolerates surrounding whitespace, a leading move number (``"1. Qh7#"``) and trailing
    check, mate and annotation marks; anything else is not a move.
    """
    if not isinstance(text, str):
        return None
    text = _MOVE_NUMBER.sub("", text.strip()).rstrip(_ANNOTATION).strip()
    if not text or len(text) > 12:
        return None
    try:
        return board.parse_san(text)
    except ValueError:
        pass
    try:
        move = chess.Move.from_uci(text.lower())
    except ValueError:
        return None
    return move if board.is_legal(move) else None


def mating_moves(board: chess.Board) -> list[chess.Move]:
    """Every legal move of the side to move that checkmates, in generation order."""
    mates = []
    for move in board.legal_moves:
        if not board.gives_check(move):
            continue  # cheap filter: only checks can mate
        board.push(move)
        if board.is_checkmate():
            mates.append(move)
        board.pop()
    return mates


@dataclass(frozen=True)
class ChessConfig:
    """Split sizes, and how many unrelated pieces may be scattered over a pattern."""

    train: int = 200
    val: int = 50
    test: int = 50
    noise: int = 3  # at most this many extra pieces per position (0 keeps patterns bare)

    def __post_init__(self) -> None:
        check_split_sizes("chess", {"train": self.train, "val": self.val, "test": self.test})
        total = self.train + self.val + self.test
        if total > _MAX_ITEMS:
            raise TaskError(f"chess: {total} items requested, at most {_MAX_ITEMS} allowed")
        if not isinstance(self.noise, int) or not 0 <= self.noise <= 8:
            raise TaskError(f"chess: noise must be an integer in [0, 8], got {self.noise!r}")


class ChessTask(Task):
    id = "chess-v1"
    description = (
        "Mate in one: each item gives a chess position as a FEN string and the side to "
        "move; the answer is one move, in SAN ('Qh7#') or UCI ('h5h7'), that checkmates. "
        "The reward is 1.0 if the move is legal in the position and gives checkmate (any "
        "mating move counts; a move number and check marks are ignored) and 0.0 otherwise."
    )
    metric = "mate found (accuracy)"
    public_meta_keys = ("fen", "side")

    def __init__(self, seed: int = 0, config: ChessConfig | None = None) -> None:
        super().__init__(seed)
        self.config = config or ChessConfig()

    def splits(self, seed: int) -> Splits:
        rng = random.Random(seed)
        sizes = (self.config.train, self.config.val, self.config.test)
        items: list[Item] = []
        seen: set[str] = set()
        budget = _ATTEMPTS_PER_ITEM * sum(sizes)
        while len(items) < sum(sizes):
            # Patterns take turns, so every split mixes them whatever their accept rates.
            name, build = PATTERNS[len(items) % len(PATTERNS)]
            board = _candidate(rng, build, self.config.noise)
            budget -= 1
            if budget < 0:
                raise TaskError(f"chess: could not generate {sum(sizes)} distinct puzzles")
            mates = _puzzle_mates(board)
            if not mates or board.fen() in seen:
                continue
            seen.add(board.fen())
            items.append(_item(f"mate-{seed}-{len(items):04d}", board, mates, name))
        train, val = sizes[0], sizes[0] + sizes[1]
        return {"train": items[:train], "val": items[train:val], "test": items[val:]}

    def reward(self, item: Item, answer_text: str) -> float:
        return 1.0 if self.reward_detail(item, answer_text)["mate"] else 0.0

    def reward_detail(self, item: Item, answer_text: str) -> dict[str, Any]:
        board = chess.Board(item.meta["fen"])
        move = parse_move(board, answer_text)
        if move is None:
            return {"legal": False, "check": False, "mate": False, "move": None}
        check = board.gives_check(move)
        board.push(move)
        return {"legal": True, "check": check, "mate": board.is_checkmate(), "move": move.uci()}

    def harness_template(self) -> dict[str, bytes]:
        return template_files("tasks.chess")


def _item(item_id: str, board: chess.Board, mates: list[chess.Move], pattern: str) -> Item:
    sans = sorted(board.san(move) for move in mates)
    side = "white" if board.turn == chess.WHITE else "black"
    fen = board.fen()
    return Item(
        id=item_id,
        prompt=f"{side.capitalize()} to move and mate in one. FEN: {fen}",
        answer=sans[0],
        meta={
            "fen": fen,
            "side": side,
            "mates": sans,
            "mates_uci": sorted(move.uci() for move in mates),
            "pattern": pattern,
        },
    )


def _puzzle_mates(board: chess.Board) -> list[chess.Move]:
    """The mating moves of a usable puzzle; empty when the position is not one."""
    if not board.is_valid() or board.is_check() or board.is_game_over():
        return []
    return mating_moves(board)


def _candidate(rng: random.Random, build: Builder, noise: int) -> chess.Board:
    """A pattern with White to mate, plus noise, then a random mirror image and colours."""
    board = build(rng)
    for _ in range(rng.randint(0, noise)):
        piece = chess.Piece.from_symbol(rng.choice("PNBRpnbrq"))
        ranks = range(1, 7) if piece.piece_type == chess.PAWN else range(8)
        _put(board, rng, piece, [chess.square(f, r) for f in range(8) for r in ranks])
    board.turn = chess.WHITE
    if rng.random() < 0.5:
        board = board.transform(chess.flip_horizontal)
    if rng.random() < 0.5:
        board = board.mirror()  # colours swap too: Black to move and mate
    return board


def _put(
    board: chess.Board, rng: random.Random, piece: chess.Piece, squares: list[int]
) -> int | None:
    """``piece`` on a random empty square of ``squares`` (nothing when all are taken)."""
    empty = [sq for sq in squares if board.piece_at(sq) is None]
    if not empty:
        return None
    square = rng.choice(empty)
    board.set_piece_at(square, piece)
    return square


def _squares(files: range | list[int], ranks: range | list[int]) -> list[int]:
    return [chess.square(f, r) for f in files for r in ranks]


_WK, _WQ, _WR, _WN = (chess.Piece.from_symbol(s) for s in "KQRN")
_BK, _BR, _BP = (chess.Piece.from_symbol(s) for s in "krp")


def _back_rank(rng: random.Random) -> chess.Board:
    """Black king on its back rank behind its own pawns; a rook or queen reaches rank 8."""
    board = chess.Board(None)
    king_file = rng.randrange(8)
    board.set_piece_at(chess.square(king_file, 7), _BK)
    shield = [f for f in (king_file - 1, king_file, king_file + 1) if 0 <= f < 8]
    for f in shield:
        board.set_piece_at(chess.square(f, 6), _BP)
    open_files = [f for f in range(8) if f not in shield]
    _put(board, rng, rng.choice((_WR, _WR, _WQ)), _squares(open_files, range(6)))
    _put(board, rng, _WK, _squares(range(8), range(3)))
    return board


def _queen_and_king(rng: random.Random) -> chess.Board:
    """King and queen against a bare king on the edge, the kings in opposition."""
    board = chess.Board(None)
    king_file = rng.randrange(8)
    board.set_piece_at(chess.square(king_file, 7), _BK)
    files = [f for f in (king_file - 1, king_file, king_file + 1) if 0 <= f < 8]
    board.set_piece_at(chess.square(rng.choice(files), 5), _WK)
    _put(board, rng, _WQ, _squares(range(8), range(7)))
    return board


def _rook_ladder(rng: random.Random) -> chess.Board:
    """One rook holds the seventh rank; the other swings up to the eighth."""
    board = chess.Board(None)
    king_file = rng.randrange(8)
    board.set_piece_at(chess.square(king_file, 7), _BK)
    far = [f for f in range(8) if abs(f - king_file) >= 2]
    _put(board, rng, _WR, _squares(far, [6]))
    _put(board, rng, rng.choice((_WR, _WQ)), _squares(far, range(6)))
    _put(board, rng, _WK, _squares(range(8), range(4)))
    return board


def _smothered(rng: random.Random) -> chess.Board:
    """King in the corner walled in by its own pieces; a knight jumps to f7."""
    board = chess.Board(None)
    board.set_piece_at(chess.H8, _BK)
    board.set_piece_at(chess.G8, rng.choice((_BR, chess.Piece.from_symbol("q"))))
    board.set_piece_at(chess.G7, _BP)
    board.set_piece_at(chess.H7, _BP)
    _put(board, rng, _WN, [chess.D6, chess.E5, chess.G5, chess.D8])
    _put(board, rng, _WK, _squares(range(8), range(3)))
    return board


def _arabian(rng: random.Random) -> chess.Board:
    """Knight on f6 guards g8 and h7; the rook mates on the h-file or the seventh rank."""
    board = chess.Board(None)
    board.set_piece_at(chess.H8, _BK)
    board.set_piece_at(chess.F6, _WN)
    _put(board, rng, _WR, _squares(range(6), [6]) + _squares([7], range(5)))
    _put(board, rng, _WK, _squares(range(8), range(4)))
    return board


#: Pattern name → builder of a White-to-mate position (before noise and colour swaps).
PATTERNS: tuple[tuple[str, Builder], ...] = (
    ("back-rank", _back_rank),
    ("queen-and-king", _queen_and_king),
    ("rook-ladder", _rook_ladder),
    ("smothered", _smothered),
    ("arabian", _arabian),
)
