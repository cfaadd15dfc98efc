import pytest

from sia.agents import AgentError, TemplateMetaAgent
from sia.ports import HarnessDraft, TaskSource


def test_initial_harness_is_the_task_template(task):
    draft = TemplateMetaAgent().initial_harness(task, run_id="r")
    assert isinstance(draft, HarnessDraft)
    assert draft.files == task.harness_template()
    first_line = draft.rationale.splitlines()[0]
    assert first_line == "Initial harness for arith-v1: the task's bundled template"
    assert "extraction='last_integer'" in draft.rationale


def test_task_satisfies_the_task_source_port(task):
    assert isinstance(task, TaskSource)


def test_a_task_without_template_is_refused(task):
    class Empty:
        id = "empty-v1"
        description = "nothing"

        def item_ids(self, split):
            return []

        def harness_template(self):
            return {"agent.py": b""}

    with pytest.raises(AgentError, match="empty-v1 has no harness template"):
        TemplateMetaAgent().initial_harness(Empty(), run_id="r")


def test_agent_names():
    assert TemplateMetaAgent.name == "offline-meta"
