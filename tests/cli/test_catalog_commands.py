"""``sia models`` and ``sia tasks``: offline, against a fake model entry and fake tasks."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sia.cli import cli
from sia.models import DEFAULT_MODEL, registry
from sia.models.progress import report
from sia.models.spec import ModelSpec
from tasks import Item, Task, get_task
from tasks import registry as task_registry

SECRET = "SENTINEL-ANSWER-4242"


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    # The embedded model must look uncached whatever this machine has fetched before.
    monkeypatch.setenv("SIA_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A registered model whose fetch reports progress and creates a directory."""
    target = tmp_path / "fake-model"
    fetches = []

    def fetch(progress):
        fetches.append(progress)
        report(progress, "download", 0, None)
        report(progress, "download", 2048, 4096)
        report(progress, "download", 4096, 4096)
        report(progress, "convert", 0, 3, unit="tensor")
        report(progress, "convert", 3, 3, unit="tensor")
        target.mkdir()
        return target

    spec = ModelSpec(
        name="fake-tiny", description="a test double", license="MIT", params=1000, source="test"
    )
    entry = registry._Entry(
        spec=spec, directory=lambda: target, is_cached=target.is_dir, fetch=fetch
    )
    monkeypatch.setitem(registry._REGISTRY, "fake-tiny", entry)
    return target, fetches


class _SecretTask(Task):
    """Every answer is ``SECRET``; ``leaky`` exposes it, breaking the task contract."""

    id = "secret-v1"
    description = "A test task. Its answers must never reach the CLI's output."
    leaky = False

    def splits(self, seed):
        return {
            split: [
                Item(id=f"{split}-{i}", prompt=f"{split} question {i}?", answer=SECRET)
                for i in range(n)
            ]
            for split, n in (("train", 3), ("val", 2), ("test", 1))
        }

    def public_item(self, item_id):
        public = super().public_item(item_id)
        return {**public, "answer": SECRET} if self.leaky else public

    def reward(self, item, answer_text):
        return 1.0 if answer_text == item.answer else 0.0

    def harness_template(self):
        return {
            "agent.py": b"def solve(client, item, config):\n    return ''\n",
            "harness.json": b"{}",
        }


class _LeakyTask(_SecretTask):
    id = "leaky-v1"
    leaky = True


@pytest.fixture
def secret_tasks(monkeypatch):
    monkeypatch.setitem(task_registry._FACTORIES, _SecretTask.id, lambda seed: _SecretTask(seed))
    monkeypatch.setitem(task_registry._FACTORIES, _LeakyTask.id, lambda seed: _LeakyTask(seed))


def sia(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_models_list_json_and_table(fake_model):
    out = sia("models", "list", "--json")
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows[DEFAULT_MODEL]["default"] is True
    assert rows[DEFAULT_MODEL]["license"] == "Apache-2.0"
    assert rows[DEFAULT_MODEL]["cached"] is False and rows[DEFAULT_MODEL]["path"] is None
    assert rows["fake-tiny"] == {
        "name": "fake-tiny",
        "default": False,
        "description": "a test double",
        "license": "MIT",
        "params": 1000,
        "source": "test",
        "cached": False,
        "path": None,
    }
    for args in (("models", "list"), ("models",)):
        out = sia(*args)
        assert out.exit_code == 0, out.output
        assert DEFAULT_MODEL in out.output and "fake-tiny" in out.output


def test_fetch_draws_a_bar_and_reports_the_path(fake_model):
    target, fetches = fake_model
    out = sia("models", "fetch", "fake-tiny", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"name": "fake-tiny", "status": "fetched", "path": str(target)}
    assert len(fetches) == 1 and fetches[0] is not None
    # The bar went to stderr, one row per stage, bytes as sizes and tensors as counts.
    assert "download" in out.stderr and "4.1/4.1 kB" in out.stderr
    assert "convert" in out.stderr and "3/3" in out.stderr


def test_fetch_when_cached_does_not_refetch(fake_model):
    target, fetches = fake_model
    target.mkdir()
    out = sia("models", "fetch", "fake-tiny")
    assert out.exit_code == 0, out.output
    assert "already cached" in out.output and str(target) in out.output
    assert fetches == []
    listed = {r["name"]: r for r in json.loads(sia("models", "list", "--json").stdout)}
    assert listed["fake-tiny"]["cached"] is True and listed["fake-tiny"]["path"] == str(target)


def test_fetch_quiet_passes_no_callback(fake_model):
    _, fetches = fake_model
    out = sia("models", "fetch", "fake-tiny", "--quiet")
    assert out.exit_code == 0, out.output
    assert fetches == [None] and out.stderr == ""
    assert out.stdout.startswith("fake-tiny fetched: ")


def test_fetch_of_a_local_directory_fetches_nothing(tmp_path):
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    out = sia("models", "fetch", str(model_dir), "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["status"] == "local" and Path(data["path"]) == model_dir.resolve()


def test_unknown_model_is_one_line():
    assert_one_line_error(sia("models", "fetch", "no-such-model"), "no-such-model")


def test_tasks_list_json_and_table():
    out = sia("tasks", "list", "--json")
    assert out.exit_code == 0, out.output
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    assert rows["arith-v1"]["splits"] == {"train": 200, "val": 50, "test": 50}
    assert rows["arith-v1"]["description"] == get_task("arith").description
    out = sia("tasks", "list")
    assert out.exit_code == 0, out.output
    assert "arith-v1" in out.output and "200" in out.output


def test_tasks_show_arith():
    task = get_task("arith")
    first = task.items("train")[0]
    out = sia("tasks", "show", "arith", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["id"] == "arith-v1" and data["splits"] == {"train": 200, "val": 50, "test": 50}
    assert set(data["template"]) >= {"agent.py", "harness.json"}
    assert data["template"]["harness.json"] == len(task.harness_template()["harness.json"])
    assert data["item"] == task.public_item(first.id) and "answer" not in data["item"]
    out = sia("tasks", "show", "arith")
    assert out.exit_code == 0, out.output
    assert first.prompt in out.output and "agent.py" in out.output


def test_tasks_show_never_prints_an_answer(secret_tasks):
    for args in (("tasks", "show", "secret"), ("tasks", "show", "secret-v1", "--json")):
        out = sia(*args)
        assert out.exit_code == 0, out.output
        assert "train question 0?" in out.output
        assert SECRET not in out.output


def test_tasks_check_arith_passes():
    out = sia("tasks", "check", "arith")
    assert out.exit_code == 0, out.output
    assert "ok  no-label-leakage" in out.output and "all 7 checks passed" in out.output
    data = json.loads(sia("tasks", "check", "arith", "--json").stdout)
    assert data["ok"] is True and "reward-range" in data["checks"]


def test_tasks_check_failure_exits_non_zero(secret_tasks):
    assert_one_line_error(sia("tasks", "check", "leaky"), "leaky-v1", "no-label-leakage")
    out = sia("tasks", "check", "leaky", "--json")
    assert out.exit_code == 1
    data = json.loads(out.stdout)
    assert data["ok"] is False and "no-label-leakage" in data["error"]


def test_unknown_task_is_one_line():
    for command in ("show", "check"):
        assert_one_line_error(sia("tasks", command, "no-such-task"), "no-such-task")


def test_tasks_list_names_metrics_and_the_sia_agent_tasks(tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_CACHE", str(tmp_path))  # nothing fetched: listed, not downloaded
    rows = {r["id"]: r for r in json.loads(sia("tasks", "list", "--json").stdout)}
    assert rows["chess-v1"]["metric"] == get_task("chess").metric
    for name in ("sia:gpqa", "sia:lawbench", "sia:longcot-chess"):
        assert rows[name]["splits"] is None and "not fetched" in rows[name]["description"]
    assert not any(tmp_path.iterdir())


def test_tasks_check_and_show_a_task_dir():
    fixture = Path(__file__).resolve().parents[1] / "support" / "sia_task"
    out = sia("tasks", "check", f"dir:{fixture}")
    assert out.exit_code == 0, out.output
    assert "no-label-leakage" in out.output and "reward-range" not in out.output
    data = json.loads(sia("tasks", "show", f"dir:{fixture}", "--json").stdout)
    assert set(data["template"]) == {"agent.py", "harness.json", "target_agent.py"}
    assert set(data["item"]["files"]) == {"task.md", "questions.json"}
