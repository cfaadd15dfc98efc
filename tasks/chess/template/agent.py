"""Mate-in-one harness: ask the policy model for a move, read one move from the reply.

Entry point: ``solve(client, item, config) -> str``.

- ``client``: an OpenAI-compatible client (``client.chat.completions.create``).
- ``item``: the public item, ``{"id", "question", "fen", "side"}``; it never holds the answer.
- ``config``: the parsed ``harness.json``.

Every behaviour is switched by the config, so a harness edit is a small config change that
reads well in a diff. Besides the standard library this file needs only python-chess
(``import chess``, pure Python), which it uses to read the position, never to search it.

Config keys: ``prompt_format`` (``chat``: system prompt, few-shot turns and
``user_template`` as chat messages; ``completion``: solved positions as a plain-text
pattern rendered with ``completion_template``, the reply cut at the end of the line),
``system_prompt``, ``user_template`` and ``completion_template`` (``str.format`` over the
item), ``few_shot`` (``[{"item": {...}, "answer": "..."}]``), ``max_tokens``,
``temperature``, ``extraction`` (``first_move`` | ``last_move`` | ``first_line`` |
``legal_move``: the first move-shaped token, the last, the first on the first line, or
the first that is a legal move in the position), ``retries`` and ``retry_temperature``
(resample when no move was found), ``samples`` and ``vote_temperature`` (majority over
several samples), ``model``, and ``tools``:

- ``tools.legal_moves``: list the legal moves (SAN) under every position in the prompt, so
  the model picks a move instead of inventing one.
- ``tools.mate_check``: replay each proposed move on the board and keep one that mates;
  when the chosen move does not, try the reply's other moves, then resample (``retries``).
"""

import re
from collections import Counter
from typing import Any

import chess

__all__ = [
    "EXTRACTORS",
    "build_messages",
    "build_prompt",
    "candidates",
    "extract",
    "mates",
    "parse",
    "solve",
]

# SAN ("Qh7#", "exd6", "e8=Q+", "O-O") or UCI ("h5h7", "e7e8q"); UCI is tried first so that
# "e2e4" is not read as the pawn move "e2".
_MOVE = re.compile(
    r"(?<![A-Za-z0-9])("
    r"O-O-O|O-O|0-0-0|0-0"
    r"|[a-h][1-8][a-h][1-8][qrbnQRBN]?"
    r"|[KQRBN][a-h]?[1-8]?x?[a-h][1-8]"
    r"|[a-h](?:x[a-h])?[1-8](?:=?[QRBN])?"
    r")[+#]?(?![A-Za-z0-9])"
)


def _tokens(text):
    return _MOVE.findall(text)


def parse(board, token):
    """The legal move ``token`` spells on ``board`` (SAN or UCI), or ``None``."""
    token = token.strip().rstrip("#+!?.")
    try:
        return board.parse_san(token)
    except ValueError:
        pass
    try:
        move = chess.Move.from_uci(token.lower())
    except ValueError:
        return None
    return move if board.is_legal(move) else None


def _first_move(text, board):
    found = _tokens(text)
    return found[0] if found else None


def _last_move(text, board):
    found = _tokens(text)
    return found[-1] if found else None


def _first_line(text, board):
    # A small model often answers and then carries on with commentary or a new position.
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return _first_move(line, board)


def _legal_move(text, board):
    return next((token for token in _tokens(text) if parse(board, token)), None)


EXTRACTORS = {
    "first_move": _first_move,
    "last_move": _last_move,
    "first_line": _first_line,
    "legal_move": _legal_move,
}


def _normalise(board, token):
    """A legal move as SAN (so "h5h7" and "Qh7#" vote together); anything else as written."""
    move = parse(board, token)
    return board.san(move) if move else token


def extract(text: str, strategy: str, board: chess.Board) -> str | None:
    """The move in ``text`` chosen by ``strategy``; ``None`` when there is none."""
    if strategy not in EXTRACTORS:
        raise ValueError(f"unknown extraction {strategy!r}; known: {', '.join(EXTRACTORS)}")
    found = EXTRACTORS[strategy](text or "", board)
    return None if found is None else _normalise(board, found)


def candidates(text: str, strategy: str, board: chess.Board) -> list[str]:
    """The extracted move first, then every other legal move the reply names, as SAN."""
    first = extract(text, strategy, board)
    found = [] if first is None else [first]
    for token in _tokens(text or ""):
        move = parse(board, token)
        if move is not None and board.san(move) not in found:
            found.append(board.san(move))
    return found


def mates(board, answer):
    """Whether ``answer`` is a legal move on ``board`` that checkmates."""
    move = parse(board, answer)
    if move is None:
        return False
    board = board.copy(stack=False)
    board.push(move)
    return board.is_checkmate()


def _tools(config):
    tools = config.get("tools") or {}
    return tools if isinstance(tools, dict) else {}


def _render(template, item, config, lead=False):
    """The question from ``template``, with the legal moves listed when the tool is on.

    ``lead`` puts the list first: a completion pattern must end where the answer goes.
    """
    text = template.format_map(item)
    if not (_tools(config).get("legal_moves") and item.get("fen")):
        return text
    board = chess.Board(item["fen"])
    listed = f"Legal moves: {', '.join(sorted(board.san(m) for m in board.legal_moves))}"
    return f"{listed}\n{text}" if lead else f"{text}\n{listed}"


def build_messages(item: dict, config: dict) -> list[dict[str, str]]:
    template = config.get("user_template", "{question}")
    messages = []
    if config.get("system_prompt"):
        messages.append({"role": "system", "content": config["system_prompt"]})
    for shot in config.get("few_shot", []):
        messages.append({"role": "user", "content": _render(template, shot["item"], config)})
        messages.append({"role": "assistant", "content": str(shot["answer"])})
    messages.append({"role": "user", "content": _render(template, item, config)})
    return messages


def build_prompt(item: dict, config: dict) -> str:
    """The plain-text pattern for ``completion`` format: solved positions, then this one."""
    template = config.get("completion_template", "{question}")
    lines = [
        f"{_render(template, shot['item'], config, lead=True)} {shot['answer']}"
        for shot in config.get("few_shot", [])
    ]
    return "\n".join([*lines, _render(template, item, config, lead=True)])


def _complete(client, item, config, temperature):
    common = {
        "model": config.get("model", "policy"),
        "max_tokens": int(config.get("max_tokens", 12)),
        "temperature": temperature,
    }
    if config.get("prompt_format", "chat") == "completion":
        response = client.completions.create(
            prompt=build_prompt(item, config), stop=["\n"], **common
        )
        return response.choices[0].text or ""
    response = client.chat.completions.create(messages=build_messages(item, config), **common)
    return response.choices[0].message.content or ""


def _answer(client, item, config, board, retry):
    """One attempt: ``(answer or None, whether it mates)``."""
    samples = max(1, int(config.get("samples", 1)))
    temperature = float(config.get("temperature", 0.0))
    if samples > 1:
        temperature = float(config.get("vote_temperature", 0.7))
    elif retry:
        # Greedy decoding would repeat the failed reply word for word.
        temperature = max(temperature, float(config.get("retry_temperature", 0.7)))
    strategy = config.get("extraction", "first_move")
    replies = [_complete(client, item, config, temperature) for _ in range(samples)]
    votes = [extract(reply, strategy, board) for reply in replies]
    votes = [vote for vote in votes if vote is not None]
    if _tools(config).get("mate_check"):
        # Prefer the majority among mating moves; the model's other proposals count too.
        mating = [vote for vote in votes if mates(board, vote)]
        if not mating:
            proposed = [move for reply in replies for move in candidates(reply, strategy, board)]
            mating = [move for move in proposed if mates(board, move)]
        if mating:
            return Counter(mating).most_common(1)[0][0], True
    # most_common keeps first-seen order among ties, so the vote is deterministic.
    return (Counter(votes).most_common(1)[0][0] if votes else None), False


def solve(client: Any, item: dict, config: dict) -> str:
    """Solve one episode; the move (SAN when legal), ``""`` when no move was found."""
    if config.get("prompt_format", "chat") not in ("chat", "completion"):
        raise ValueError(
            f"unknown prompt_format {config['prompt_format']!r}; use chat or completion"
        )
    board = chess.Board(item["fen"])
    checking = bool(_tools(config).get("mate_check"))
    fallback = None
    for attempt in range(1 + max(0, int(config.get("retries", 0)))):
        answer, mated = _answer(client, item, config, board, retry=attempt > 0)
        if mated or (answer is not None and not checking):
            return answer
        fallback = fallback or answer
    return fallback or ""
