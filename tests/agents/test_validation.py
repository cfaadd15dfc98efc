"""The static stage of harness validation: what makes a harness unloadable, unrun."""

from sia.agents.validation import static_problems
from tasks import get_task


def test_the_bundled_template_has_no_problems():
    assert static_problems(get_task("arith").harness_template()) == []


def test_each_problem_is_named():
    files = {
        "agent.py": b"def run(client, item, config):\n    return ''\n",
        "helper.py": b"def broken(:\n",
        "harness.json": b"{not json",
    }
    problems = static_problems(files)
    assert len(problems) == 3
    assert "agent.py defines no top-level solve()" in problems[0]
    assert problems[1].startswith("harness.json is not valid JSON")
    assert problems[2].startswith("helper.py does not compile")
    assert static_problems({"harness.json": b"{}"}) == ["agent.py is missing"]


def test_a_nested_solve_does_not_count():
    nested = b"class A:\n    def solve(self, client, item, config):\n        return ''\n"
    assert static_problems({"agent.py": nested}) == [
        "agent.py defines no top-level solve() entry point"
    ]
