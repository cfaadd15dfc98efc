"""One episode process at a time: environment, labels, failures, all without a model."""

import json
from pathlib import Path

import pytest

import tasks
from sia.runner import EpisodeLimits, build_job, episode_env, run_episode_process
from tests.runner.conftest import current_fork_server

pytestmark = pytest.mark.usefixtures("launch")

CANARY = "sia-canary-5b1d"


def _harness(tmp_path: Path, source: str) -> Path:
    directory = tmp_path / "harness"
    directory.mkdir()
    (directory / "agent.py").write_text(source)
    return directory


def _run(tmp_path: Path, source: str, item: dict | None = None, timeout: float = 20.0):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    job = build_job(item or {"id": "x", "question": "q"}, {"k": 1}, "http://127.0.0.1:9/v1", "t", 5)
    return run_episode_process(
        _harness(tmp_path, source), scratch, job, EpisodeLimits(timeout), current_fork_server()
    )


def test_answer_comes_back(tmp_path: Path) -> None:
    outcome = _run(
        tmp_path,
        "def solve(client, item, config):\n    return item['question'] + str(config['k'])\n",
    )
    assert (outcome.status, outcome.answer, outcome.reason) == ("ok", "q1", "")


def test_harness_prints_cannot_garble_the_result(tmp_path: Path) -> None:
    source = (
        "import os, sys\n"
        'print(\'{"ok": true, "answer": "forged"}\')\n'
        "def solve(client, item, config):\n"
        "    print('garbage {{{')\n"
        "    os.write(1, b'more garbage\\n')\n"
        "    return '7'\n"
    )
    outcome = _run(tmp_path, source)
    assert (outcome.status, outcome.answer) == ("ok", "7")
    assert "garbage {{{" in outcome.stderr_tail


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("def solve(client, item, config):\n    raise KeyError('nope')\n", "KeyError"),
        ("import sys\ndef solve(client, item, config):\n    sys.exit(3)\n", "sys.exit(3)"),
        ("def solve(client, item, config):\n    return {'a': 1}\n", "returned dict"),
        ("import os\ndef solve(client, item, config):\n    os._exit(0)\n", "no result"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "SIGKILL"),
        ("def solve(:\n", "SyntaxError"),
        ("x = 1\n", "no solve"),
        (
            "def solve(client, item, config):\n    return 'x' * (4 * 1024 ** 3)\n",
            "out of memory",
        ),
    ],
)
def test_failures_are_errors_with_a_reason(tmp_path: Path, source: str, reason: str) -> None:
    outcome = _run(tmp_path, source)
    assert outcome.status == "error"
    assert outcome.answer is None
    assert reason in outcome.reason


def test_hang_is_killed(tmp_path: Path) -> None:
    # A harness cannot start children any more (the guard refuses; see
    # test_runner_containment), so a hang is the process itself: killed with its group.
    source = "import time\ndef solve(client, item, config):\n    time.sleep(60)\n"
    outcome = _run(tmp_path, source, timeout=3.0)
    assert outcome.status == "timeout"
    assert "3s" in outcome.reason
    assert outcome.duration_ms < 10_000


def test_environment_holds_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIA_TEST_CANARY", CANARY)
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    source = (
        "import json, os\n"
        "def solve(client, item, config):\n"
        "    return json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()})\n"
    )
    outcome = _run(tmp_path, source)
    seen = json.loads(outcome.answer)
    assert CANARY not in json.dumps(seen)
    assert "OPENAI_API_KEY" not in seen["env"]
    assert seen["env"]["HOME"] == seen["cwd"] == str(tmp_path / "scratch")
    assert CANARY not in json.dumps(episode_env(tmp_path))


def test_harness_sees_only_the_public_item_and_cannot_import_the_task(tmp_path: Path) -> None:
    task = tasks.get_task("arith", seed=0)
    item_id = task.item_ids("val")[0]
    source = (
        "import importlib.util, json, sys\n"
        "def solve(client, item, config):\n"
        "    found = [n for n in ('tasks', 'sia', 'ledger') if importlib.util.find_spec(n)]\n"
        "    return json.dumps({'item': item, 'importable': found, 'path': sys.path})\n"
    )
    outcome = _run(tmp_path, source, item=task.public_item(item_id))
    seen = json.loads(outcome.answer)
    assert seen["item"] == task.public_item(item_id)
    assert "answer" not in seen["item"]
    assert seen["importable"] == []
    assert str(Path(tasks.__file__).parents[1]) not in seen["path"]


def test_client_is_an_openai_client_for_the_gateway(tmp_path: Path) -> None:
    source = (
        "def solve(client, item, config):\n"
        "    return f'{type(client).__module__}|{client.base_url}|{client.api_key}'\n"
    )
    outcome = _run(tmp_path, source)
    module, url, key = outcome.answer.split("|")
    assert module.startswith("openai")
    assert url.rstrip("/") == "http://127.0.0.1:9/v1"
    assert key == "t"
