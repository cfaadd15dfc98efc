"""``chess-v1``: the contract, the generated puzzles, the reward, the template and its edits."""

import ast
import json

import chess
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import InMemoryRecorder
from sia.agents.operators import SwitchExtraction
from sia.agents.operators_chess import (
    CHESS_OPERATORS,
    LegalMoveExtraction,
    LegalMoves,
    MateCheck,
)
from sia.gateway import Gateway
from sia.ports import RolloutRequest
from sia.runner import HarnessRunner
from tasks import get_task
from tasks.base import SPLITS, Item
from tasks.check import check_task
from tasks.chess import ChessConfig, ChessTask, parse_move
from tasks.errors import TaskError
from tests.gateway.fakes import ScriptedBackend
from tests.support.clients import FakeClient, load_agent

# White: Kg1 Qh5 Bd3; Black: Kg8 Rf8 pawns f7 g7. Qh7# is the only mate; Bh7+ only checks.
FEN = "5rk1/5pp1/8/7Q/8/3B4/8/6K1 w - - 0 1"
PUZZLE = Item(
    id="mate-x",
    prompt=f"White to move and mate in one. FEN: {FEN}",
    answer="Qh7#",
    meta={"fen": FEN, "side": "white", "mates": ["Qh7#"], "mates_uci": ["h5h7"]},
)
PUBLIC = {"id": "mate-x", "question": PUZZLE.prompt, "fen": FEN, "side": "white"}


@pytest.fixture(scope="module")
def task() -> ChessTask:
    return ChessTask(seed=3)


@pytest.fixture(scope="module")
def files(task) -> dict[str, bytes]:
    return task.harness_template()


@pytest.fixture(scope="module")
def config(files) -> dict:
    return json.loads(files["harness.json"])


@pytest.fixture(scope="module")
def agent(files):
    return load_agent(files)


def _all_items(task: ChessTask) -> list[Item]:
    return [item for split in SPLITS for item in task.items(split)]


# -- the task ---------------------------------------------------------------------------


def test_the_task_passes_the_contract(task):
    assert "no-label-leakage" in check_task(task, seeds=(0, 7))
    assert (task.id, task.metric) == ("chess-v1", "mate found (accuracy)")
    for split, size in (("train", 200), ("val", 50), ("test", 50)):
        assert len(task.items(split)) == size
    item = task.items("val")[0]
    assert set(task.public_item(item.id)) == {"id", "question", "fen", "side"}
    assert task.valid_answer("Qh7#") is None


def test_splits_are_deterministic_and_distinct():
    first = ChessTask(seed=5).splits(5)
    assert first == ChessTask(seed=5).splits(5)
    assert first != ChessTask(seed=6).splits(6)
    items = [item for split in SPLITS for item in first[split]]
    assert len({item.id for item in items}) == len(items)
    assert len({item.meta["fen"] for item in items}) == len(items)
    assert len({item.prompt for item in items}) == len(items)


def test_puzzles_mix_patterns_and_colours(task):
    items = _all_items(task)
    patterns = {item.meta["pattern"] for item in items}
    assert patterns == {"back-rank", "queen-and-king", "rook-ladder", "smothered", "arabian"}
    sides = [item.meta["side"] for item in items]
    assert 0.3 < sides.count("black") / len(sides) < 0.7


def test_every_listed_mate_mates_and_none_is_missing(task):
    for item in _all_items(task):
        board = chess.Board(item.meta["fen"])
        assert board.is_valid() and not board.is_game_over() and not board.is_check()
        assert item.meta["side"] == ("white" if board.turn else "black")
        assert item.prompt.startswith(item.meta["side"].capitalize() + " to move")
        assert item.meta["fen"] in item.prompt
        found = set()
        for move in board.legal_moves:  # brute force, without the generator's check filter
            board.push(move)
            if board.is_checkmate():
                found.add(move.uci())
            board.pop()
        assert found == set(item.meta["mates_uci"])
        assert item.answer in item.meta["mates"]
        assert {board.parse_san(san).uci() for san in item.meta["mates"]} == found
        for san in item.meta["mates"]:
            assert task.reward(item, san) == 1.0


def test_config_is_validated():
    with pytest.raises(TaskError, match="positive integer"):
        ChessConfig(train=0)
    with pytest.raises(TaskError, match="at most"):
        ChessConfig(train=10_000)
    with pytest.raises(TaskError, match="noise"):
        ChessConfig(noise=-1)
    small = ChessTask(seed=1, config=ChessConfig(train=5, val=2, test=2, noise=0))
    assert [len(small.items(split)) for split in SPLITS] == [5, 2, 2]


# -- the reward -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer", ["Qh7#", "Qh7", "h5h7", "H5H7", " 1. Qh7# ", "1...Qh7", "1.Qh7+!", "Qh7.", "Qh7#\n"]
)
def test_mating_moves_score_one_in_san_or_uci(answer):
    task = ChessTask()
    assert task.reward(PUZZLE, answer) == 1.0
    assert task.reward_detail(PUZZLE, answer) == {
        "legal": True,
        "check": True,
        "mate": True,
        "move": "h5h7",
    }


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        ("Qh6", {"legal": True, "check": False, "mate": False, "move": "h5h6"}),
        ("Bh7+", {"legal": True, "check": True, "mate": False, "move": "d3h7"}),
        ("d3h7", {"legal": True, "check": True, "mate": False, "move": "d3h7"}),
        ("Qa1", {"legal": False, "check": False, "mate": False, "move": None}),
        ("h5a1", {"legal": False, "check": False, "mate": False, "move": None}),
        ("Qh8#", {"legal": True, "check": True, "mate": False, "move": "h5h8"}),
        ("Ke3", {"legal": False, "check": False, "mate": False, "move": None}),
    ],
)
def test_other_moves_score_zero_and_say_why(answer, detail):
    task = ChessTask()
    assert task.reward(PUZZLE, answer) == 0.0
    assert task.reward_detail(PUZZLE, answer) == detail


@pytest.mark.parametrize(
    "junk",
    [None, "", "   ", "garbage", "\x00", "Qh7# Qh6", "the answer is Qh7#", "e9e10", 17, "O-O"],
)
def test_junk_scores_zero_without_raising(junk):
    task = ChessTask()
    assert task.reward(PUZZLE, junk) == 0.0
    assert task.reward_detail(PUZZLE, junk)["legal"] is False


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_the_reward_never_raises(text):
    task = ChessTask()
    assert task.reward(PUZZLE, text) in (0.0, 1.0)
    assert set(task.reward_detail(PUZZLE, text)) == {"legal", "check", "mate", "move"}
    move = parse_move(chess.Board(FEN), text)
    assert move is None or move in chess.Board(FEN).legal_moves


# -- the template harness ---------------------------------------------------------------


def test_the_template_needs_only_the_standard_library_and_chess(files, config):
    tree = ast.parse(files["agent.py"])
    imported = {
        (alias.name if isinstance(node, ast.Import) else node.module).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {"re", "collections", "typing", "chess"}
    assert config["tools"] == {"legal_moves": False, "mate_check": False}


def test_solve_asks_once_and_returns_the_move(agent, config):
    client = FakeClient("Qh7#")
    assert agent.solve(client, PUBLIC, config) == "Qh7#"
    [call] = client.calls
    assert call["messages"] == [
        {"role": "system", "content": config["system_prompt"]},
        {"role": "user", "content": PUZZLE.prompt},
    ]
    assert (call["max_tokens"], call["temperature"]) == (12, 0.0)


@pytest.mark.parametrize(
    ("reply", "strategy", "answer"),
    [
        ("Qh7#", "first_move", "Qh7#"),
        ("h5h7", "first_move", "Qh7#"),  # a legal move comes back as SAN
        ("The queen on h5 mates: Qh7#", "first_move", "h5"),
        ("The queen on h5 mates: Qh7#", "legal_move", "Qh7#"),
        ("The queen on h5 mates: Qh7#", "last_move", "Qh7#"),
        ("Qh6\nor rather Qh7#", "first_line", "Qh6"),
        ("Qh6\nor rather Qh7#", "last_move", "Qh7#"),
        ("Rook to a1, then e2e4", "legal_move", ""),
        ("I cannot tell.", "first_move", ""),
        ("", "legal_move", ""),
    ],
)
def test_extraction_strategies(agent, config, reply, strategy, answer):
    assert agent.solve(FakeClient(reply), PUBLIC, {**config, "extraction": strategy}) == answer


def test_unknown_extraction_is_an_error(agent, config):
    with pytest.raises(ValueError, match="unknown extraction"):
        agent.solve(FakeClient("Qh7#"), PUBLIC, {**config, "extraction": "magic"})


def test_legal_moves_are_listed_only_when_the_tool_is_on(agent, config):
    board = chess.Board(FEN)
    listed = "Legal moves: " + ", ".join(sorted(board.san(m) for m in board.legal_moves))
    assert "Legal moves" not in json.dumps(agent.build_messages(PUBLIC, config))
    tools = {**config, "tools": {"legal_moves": True}}
    messages = agent.build_messages(PUBLIC, tools)
    assert messages[-1]["content"] == f"{PUZZLE.prompt}\n{listed}"
    shot = {"item": PUBLIC, "answer": "Qh7#"}
    prompt = agent.build_prompt(PUBLIC, {**tools, "few_shot": [shot]})
    # Completion format: the list leads each position, so the pattern ends where moves go.
    assert prompt == f"{listed}\nFEN: {FEN}\nMate in one: Qh7#\n{listed}\nFEN: {FEN}\nMate in one:"


def test_completion_format_cuts_the_reply_at_the_line(agent, config):
    client = FakeClient("Qh7#")
    assert agent.solve(client, PUBLIC, {**config, "prompt_format": "completion"}) == "Qh7#"
    assert client.calls[0]["prompt"] == f"FEN: {FEN}\nMate in one:"
    assert client.calls[0]["stop"] == ["\n"]


def test_mate_check_keeps_a_mating_move_from_the_reply(agent, config):
    reply = "Qh6 looks strong, or Qh7#"
    assert agent.solve(FakeClient(reply), PUBLIC, config) == "Qh6"
    checked = {**config, "tools": {"mate_check": True}}
    client = FakeClient(reply)
    assert agent.solve(client, PUBLIC, checked) == "Qh7#"
    assert len(client.calls) == 1


def test_mate_check_resamples_until_a_move_mates(agent, config):
    checked = {**config, "tools": {"mate_check": True}, "retries": 3, "retry_temperature": 0.9}
    client = FakeClient("Qh6", "Bh7+", "h5h7", "Qg6")
    assert agent.solve(client, PUBLIC, checked) == "Qh7#"
    assert [call["temperature"] for call in client.calls] == [0.0, 0.9, 0.9]
    # Without the check the first legal answer is final, mate or not.
    client = FakeClient("Qh6", "Qh7#")
    assert agent.solve(client, PUBLIC, {**config, "retries": 3}) == "Qh6"
    assert len(client.calls) == 1


def test_mate_check_falls_back_to_the_first_answer(agent, config):
    checked = {**config, "tools": {"mate_check": True}, "retries": 1}
    client = FakeClient("Qh6", "Bh7+")
    assert agent.solve(client, PUBLIC, checked) == "Qh6"
    assert len(client.calls) == 2


def test_voting_prefers_mates_when_checked(agent, config):
    voting = {**config, "samples": 3, "vote_temperature": 0.8}
    client = FakeClient("Qh6", "Qh7#", "Qh6")
    assert agent.solve(client, PUBLIC, voting) == "Qh6"
    assert {call["temperature"] for call in client.calls} == {0.8}
    checked = {**voting, "tools": {"mate_check": True}}
    assert agent.solve(FakeClient("Qh6", "Qh7#", "Qh6"), PUBLIC, checked) == "Qh7#"


def test_the_template_solves_real_items_the_reward_accepts(task, agent, config):
    for item in task.items("val")[:10]:
        public = task.public_item(item.id)
        uci = item.meta["mates_uci"][0]
        answer = agent.solve(
            FakeClient(f"I play {uci}."), public, {**config, "extraction": "legal_move"}
        )
        assert task.reward(item, answer) == 1.0
        assert answer in item.meta["mates"]


# -- edit operators -----------------------------------------------------------------------


def _applied(files, edit):
    return {**files, "harness.json": edit.files["harness.json"].encode()}


@pytest.mark.parametrize(
    ("operator", "key", "value"),
    [
        (LegalMoves(), "tools", {"legal_moves": True, "mate_check": False}),
        (MateCheck(), "tools", {"legal_moves": False, "mate_check": True}),
        (LegalMoveExtraction(), "extraction", "legal_move"),
    ],
)
def test_chess_operators_apply_once_to_the_chess_template(files, config, operator, key, value):
    assert operator.applies(files)
    edit = operator.apply(files)
    new = json.loads(edit.files["harness.json"])
    assert new[key] == value
    assert {k: v for k, v in new.items() if k != key} == {
        k: v for k, v in config.items() if k != key
    }
    assert edit.operator == operator.name and edit.summary
    assert not operator.applies(_applied(files, edit))


def test_chess_operators_leave_other_harnesses_alone(files):
    others = [get_task("arith").harness_template(), get_task("charges").harness_template()]
    for operator in CHESS_OPERATORS:
        assert not any(operator.applies(other) for other in others), operator.name
    # An agent.py that does not read the tool's key gets no flag it would ignore.
    blind = {**files, "agent.py": files["agent.py"].replace(b'"mate_check"', b'"other"')}
    assert not MateCheck().applies(blind) and LegalMoves().applies(blind)


def test_chess_operators_have_their_own_names():
    names = [operator.name for operator in CHESS_OPERATORS]
    assert names == ["tool-legal-moves", "legal-move-extraction", "tool-mate-check"]
    assert SwitchExtraction.name not in names


def test_the_generic_first_line_switch_also_fits_the_chess_template(files):
    edit = SwitchExtraction().apply(files)
    assert json.loads(edit.files["harness.json"])["extraction"] == "first_line"


# -- the template in the real episode sandbox -----------------------------------------------


@pytest.mark.parametrize("fork_server", [False, True])
def test_the_template_imports_chess_inside_the_sandbox(task, files, fork_server):
    item = task.items("train")[0]
    other = next(i for i in task.items("train") if item.answer not in i.meta["mates"])
    checked = json.loads(files["harness.json"])
    checked["tools"] = {"legal_moves": True, "mate_check": True}
    harness = {**files, "harness.json": json.dumps(checked).encode()}
    request = RolloutRequest(
        run_id="run-chess",
        iteration=1,
        harness_commit="h1",
        harness=harness,
        adapter_tag=None,
        adapter_path=None,
        item_ids=(item.id, other.id),
        seed=0,
    )
    with InMemoryRecorder() as recorder:
        with Gateway(ScriptedBackend(reply=item.answer, delay_s=0.0)) as gateway:
            runner = HarnessRunner(task, gateway, recorder, fork_server=fork_server)
            result = runner.rollout(request)
        rows = {row.item_id: row for row in recorder.read_episodes("run-chess")}
    assert result.failures == 0, {k: (r.status, r.reason) for k, r in rows.items()}
    assert (rows[item.id].status, rows[item.id].reward) == ("ok", 1.0)
    assert rows[item.id].answer == item.answer
    assert (rows[other.id].status, rows[other.id].reward) == ("ok", 0.0)


def test_the_registry_serves_chess():
    assert isinstance(get_task("chess", seed=1), ChessTask)
