"""SIA-format task directories: layout errors, per-item scoring by the task's own evaluator,
what a harness may see, and a whole run whose harness is the task's reference agent."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from sia.cli import cli
from tasks import get_task
from tasks.check import _leak
from tasks.siadir import DirTask, TaskDirError, read_task_dir
from tasks.siadir.records import read_records

FIXTURE = Path(__file__).resolve().parents[1] / "support" / "sia_task"


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    """A private copy of the sums task, free to break."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "sums"))


def _answer(files: dict[str, str]) -> str:
    return json.dumps({"files": files})


def _submission(answers: dict[str, str]) -> str:
    return _answer({"submission.json": json.dumps({"answers": answers})})


def test_the_task_reads_items_labels_and_splits(task_dir):
    task = DirTask(task_dir, seed=1)
    assert task.dir.items.path.name == "questions.json"
    assert [f.path.name for f in task.dir.private] == ["answers.json"]
    sizes = {split: len(task.items(split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 2, "test": 2}
    ids = [i for split in ("train", "val", "test") for i in task.item_ids(split)]
    assert sorted(ids) == [f"q{i:02d}" for i in range(12)]
    assert DirTask(task_dir, seed=1).item_ids("val") == task.item_ids("val")
    assert DirTask(task_dir, seed=2).item_ids("val") != task.item_ids("val")
    assert task.id.startswith("sums@") and task.id == DirTask(task_dir).id


def test_a_harness_sees_its_item_alone_and_no_label(task_dir):
    task = DirTask(task_dir)
    item = task.items("train")[0]
    public = task.public_item(item.id)
    assert set(public["files"]) == {"task.md", "questions.json"}  # no evaluate.py
    rows = json.loads(public["files"]["questions.json"])
    assert [row["id"] for row in rows] == [item.id]
    label = json.loads(item.answer)["data/private/answers.json"]["answer"]
    assert _leak(item, public) is None
    assert f'"answer": "{label}"' not in json.dumps(public)
    assert "answers.json" not in json.dumps(public)


def test_the_evaluator_scores_one_item_on_its_labels_alone(task_dir):
    task = DirTask(task_dir)
    item = task.items("val")[0]
    right = json.loads(item.answer)["data/private/answers.json"]["answer"]
    assert task.reward(item, _submission({item.id: right})) == 1.0
    assert task.reward(item, _submission({item.id: str(int(right) + 1)})) == 0.0
    detail = task.reward_detail(item, _submission({item.id: right}))
    assert detail["results"]["details"] == [{"id": item.id, "answer": right, "is_correct": True}]
    # Another item's right answer does not count for this one.
    other = task.items("val")[1]
    wrong = json.loads(other.answer)["data/private/answers.json"]["answer"]
    assert task.reward(item, _submission({other.id: wrong})) == 0.0


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("not json", "answer is not JSON"),
        (json.dumps({"files": {"a": 1}}), "answer is not JSON"),
        (_answer({}), "evaluator: exited 1: FileNotFoundError"),
        (_answer({"../escape.json": "{}"}), "unsafe file name"),
    ],
)
def test_a_bad_submission_scores_zero_with_its_reason(task_dir, answer, reason):
    task = DirTask(task_dir)
    item = task.items("val")[0]
    assert task.reward(item, answer) == 0.0
    assert reason in task.reward_detail(item, answer)["reason"]


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_an_evaluator_that_always_crashes_stops_the_run_with_one_error(task_dir):
    _replace(task_dir / "data/public/evaluate.py", "correct = sum", "correct = 1 / 0 + sum")
    task = DirTask(task_dir)
    items = task.items("train")
    for item in items[:7]:
        assert task.reward(item, _submission({item.id: "1"})) == 0.0
    with pytest.raises(TaskDirError, match=r"rejected the first 8 submissions.*ZeroDivisionError"):
        task.reward(items[7], _submission({items[7].id: "1"}))


def _rejected_until_broken(task: DirTask, reason: str) -> None:
    """Each submission scores 0 with ``reason``; the 8th in a row stops the run with it."""
    items = task.items("train")
    for item in items[:7]:
        reward, detail = task.score(item, _submission({item.id: "1"}))
        assert reward == 0.0 and reason in detail["reason"]
    with pytest.raises(TaskDirError, match=r"rejected the first \d+ submissions") as caught:
        task.reward(items[7], _submission({items[7].id: "1"}))
    assert reason in str(caught.value)


def test_an_evaluator_that_writes_no_results_fails_each_episode_then_the_run(task_dir):
    _replace(
        task_dir / "data/public/evaluate.py",
        '(args.gen_dir / "results.json")',
        "(Path('/dev/null'))",
    )
    _rejected_until_broken(DirTask(task_dir), "exited 0 but wrote no results.json")


def test_results_without_a_metric_name_it(task_dir):
    _replace(task_dir / "data/public/evaluate.py", '{"accuracy":', '{"share":')
    task = DirTask(task_dir)
    item = task.items("val")[0]
    _rejected_until_broken(
        task, """no metric 'accuracy / score / metric / mean_score'; name its key"""
    )
    (task_dir / "sia-task.json").write_text(json.dumps({"metric": "share"}))
    task = DirTask(task_dir)
    right = json.loads(item.answer)["data/private/answers.json"]["answer"]
    assert task.reward(item, _submission({item.id: right})) == 1.0


def _break_missing_task_md(root: Path) -> None:
    (root / "data/public/task.md").unlink()


def _break_missing_evaluator(root: Path) -> None:
    (root / "data/public/evaluate.py").unlink()


def _break_unparsable_evaluator(root: Path) -> None:
    (root / "data/public/evaluate.py").write_text("def main(:\n")


def _break_private_inside_public(root: Path) -> None:
    shutil.copytree(root / "data/private", root / "data/public/private")


def _break_link_into_private(root: Path) -> None:
    (root / "data/public/labels.json").symlink_to(root / "data/private/answers.json")


def _break_missing_private(root: Path) -> None:
    shutil.rmtree(root / "data/private")


def _break_missing_reference(root: Path) -> None:
    (root / "reference/reference_target_agent.py").unlink()


def _break_unkeyed_labels(root: Path) -> None:
    (root / "data/private/answers.json").write_text(json.dumps(["5", "7"]))


def _break_two_item_files(root: Path) -> None:
    shutil.copy(root / "data/public/questions.json", root / "data/public/more.json")


def _break_bad_overrides(root: Path) -> None:
    (root / "sia-task.json").write_text(json.dumps({"metrics": "accuracy"}))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (_break_missing_task_md, "data/public/task.md is missing"),
        (_break_missing_evaluator, "data/public/evaluate.py is missing"),
        (_break_unparsable_evaluator, r"evaluate.py does not parse \(line 1"),
        (_break_private_inside_public, "data/public/private looks like private data"),
        (_break_link_into_private, "labels.json links into data/private/"),
        (_break_missing_private, "data/private/ is missing"),
        (_break_missing_reference, "reference_target_agent.py is missing"),
        (_break_unkeyed_labels, "no file in data/private/ is keyed by the items' ids"),
        (_break_two_item_files, r"cannot tell which public file lists the items .*more.json"),
        (_break_bad_overrides, r"sia-task.json has unknown keys \['metrics'\]"),
    ],
)
def test_a_malformed_task_dir_gives_one_clear_error(task_dir, breakage, message):
    breakage(task_dir)
    with pytest.raises(TaskDirError, match=message) as caught:
        read_task_dir(task_dir)
    assert "\n" not in str(caught.value) and str(task_dir) in str(caught.value)


def test_run_refuses_a_malformed_task_dir_before_writing_anything(task_dir, tmp_path):
    _break_missing_task_md(task_dir)
    ws = tmp_path / "ws"
    out = CliRunner().invoke(cli, ["-w", str(ws), "run", "--task-dir", str(task_dir)])
    assert out.exit_code == 1
    assert "data/public/task.md is missing" in out.output
    assert not ws.exists()


def test_record_files_keep_their_format_when_subset(tmp_path):
    csv_file = tmp_path / "test.csv"
    csv_file.write_text('id,text\n1,"a, quoted"\n2,b\n3,c\n')
    records = read_records(csv_file)
    assert records.kind == "csv" and records.subset({"1", "3"}) == b'id,text\n1,"a, quoted"\n3,c\n'
    mapping = tmp_path / "answers.json"
    mapping.write_text(json.dumps({"k1": ["a"], "k2": 3}))
    assert json.loads(read_records(mapping).subset({"k2"})) == {"k2": 3}
    repeated = tmp_path / "rep.json"
    repeated.write_text(json.dumps([{"id": 1}, {"id": 1}]))
    with pytest.raises(TaskDirError, match="repeats the id '1'"):
        read_records(repeated)


def test_a_run_uses_the_reference_agent_as_its_harness_and_the_evaluator_as_reward(
    tmp_path, tiny_model_dir
):
    """The reference agent hard-codes a remote endpoint and key variable; its calls still
    reach the gateway, are recorded per episode, and each reward is its evaluator's score."""
    ws = tmp_path / "ws"
    args = ["-w", str(ws), "run", "--task-dir", str(FIXTURE), "--mode", "w", "--run-id", "d"]
    args += ["--iterations", "1", "--batch-size", "2", "--policy", str(tiny_model_dir)]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    listed = json.loads(CliRunner().invoke(cli, ["-w", str(ws), "episodes", "d", "--json"]).output)
    assert len(listed) == 12  # val 2 at iteration 0, rollout 2 items x 4, test 2
    task = get_task(f"dir:{FIXTURE}")
    row_id = listed[0]["episode_id"]
    for episode in listed:
        assert episode["status"] == "ok", episode
        (call,) = episode["calls"]
        assert call["request"][-1]["content"].startswith("What is")
        submitted = json.loads(json.loads(episode["answer"])["files"]["submission.json"])
        assert list(submitted["answers"]) == [episode["item_id"]]
        assert episode["reward"] == task.reward(task.item(episode["item_id"]), episode["answer"])
        # The evaluator's own verdict on this item is recorded beside the reward.
        detail = episode["reward_detail"]
        assert detail["metric"] == episode["reward"]
        (verdict,) = detail["results"]["details"]
        assert verdict["id"] == episode["item_id"] and verdict["is_correct"] is False
    shown = CliRunner().invoke(cli, ["-w", str(ws), "episodes", "d", "--episode", row_id])
    assert "reward detail:" in shown.output and '"is_correct": false' in shown.output


@pytest.mark.slow
def test_the_sia_agent_tasks_import_and_score_with_their_own_evaluators(tmp_path, monkeypatch):
    """sia:gpqa, sia:lawbench and sia:longcot-chess from the pinned sia-agent wheel (fetched
    from PyPI once per cache): each item scores 1.0 with its label and 0.0 without."""
    from tasks.siadir.package import PACKAGE_TASKS

    submissions = {
        "gpqa": lambda item_id, label: _answer(
            {
                "results/out.json": json.dumps(
                    {"details": [{"question_id": int(item_id), "model_answer": label}]}
                )
            }
        ),
        "lawbench": lambda item_id, label: _answer(
            {"submission.csv": f"id,label\n{item_id},{label}\n"}
        ),
        "longcot-chess": lambda item_id, label: _answer(
            {"responses.json": json.dumps([{"question_id": item_id, "solution": label}])}
        ),
    }
    labels = {
        "gpqa": lambda a: a["data/private/diamond_questions.json"]["correct_answer_letter"],
        "lawbench": lambda a: a["data/private/test.csv"]["label"],
        "longcot-chess": lambda a: a["data/private/answers.json"],
    }
    wrong = {
        "gpqa": lambda label: "ABCD".replace(label, "")[0],
        "lawbench": lambda label: label + "罪",
        "longcot-chess": lambda label: ["a1", "a2", "a3"] if isinstance(label, list) else "0",
    }
    for name in PACKAGE_TASKS:
        task = get_task(f"sia:{name}", seed=0)
        assert task.id.startswith(f"{name}@")
        assert min(len(task.items(s)) for s in ("train", "val", "test")) >= 10
        for item in task.items("val")[:2]:
            label = labels[name](json.loads(item.answer))
            assert _leak(item, task.public_item(item.id)) is None
            assert task.reward(item, submissions[name](item.id, label)) == 1.0, (name, item.id)
            assert task.reward(item, submissions[name](item.id, wrong[name](label))) == 0.0
        template = task.harness_template()
        assert template["target_agent.py"] == task.dir.reference.read_bytes()


def test_a_target_agent_cannot_read_the_private_labels(tmp_path, tiny_model_dir, task_dir):
    """The labels sit at a path the agent knows; the sandbox refuses the read, the episode
    fails with that reason, and nothing the agent wrote is scored."""
    labels = task_dir / "data" / "private" / "answers.json"
    _replace(
        task_dir / "reference" / "reference_target_agent.py",
        "    client = OpenAI(",
        f"    print(open({str(labels)!r}).read())\n    client = OpenAI(",
    )
    ws = tmp_path / "ws"
    args = ["-w", str(ws), "run", "--task-dir", str(task_dir), "--mode", "w", "--run-id", "p"]
    args += ["--iterations", "0", "--policy", str(tiny_model_dir)]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    listed = json.loads(CliRunner().invoke(cli, ["-w", str(ws), "episodes", "p", "--json"]).output)
    assert listed and all(e["status"] != "ok" and e["reward"] == 0.0 for e in listed)
    assert all(f"read of {labels} denied" in e["reason"] for e in listed), listed[0]["reason"]


def test_a_crashing_evaluator_stops_a_run_with_one_line_and_the_run_resumes_once_fixed(
    tmp_path, tiny_model_dir, task_dir
):
    evaluator = task_dir / "data" / "public" / "evaluate.py"
    _replace(evaluator, "correct = sum", "correct = 1 / 0 + sum")
    ws = tmp_path / "ws"
    args = ["-w", str(ws), "run", "--task-dir", str(task_dir), "--mode", "w", "--run-id", "c"]
    args += ["--iterations", "1", "--batch-size", "2", "--policy", str(tiny_model_dir)]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 1
    (line,) = out.output.strip().splitlines()[-1:]
    # Episodes are scored concurrently, so a few more than 8 may have been rejected.
    assert re.search(r"evaluate.py rejected the first \d+ submissions .*ZeroDivisionError", line)
    _replace(evaluator, "correct = 1 / 0 + sum", "correct = sum")
    resumed = CliRunner().invoke(cli, ["-w", str(ws), "resume", "c"])
    assert resumed.exit_code == 0, resumed.output
    status = json.loads(CliRunner().invoke(cli, ["-w", str(ws), "status", "--json"]).output)
    assert [run["status"] for run in status] == ["done"]
