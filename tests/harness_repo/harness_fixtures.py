"""Plain helpers shared by the harness_repo tests (fixtures live in conftest.py)."""

from collections.abc import Mapping

from harness_repo import HarnessRepo

T0 = 1_700_000_000


def harness(agent: str = "print('v1')\n", system: str = "You solve sums.\n") -> dict[str, bytes]:
    return {
        "config.json": b'{"retries": 1}\n',
        "agent.py": agent.encode(),
        "prompts/system.txt": system.encode(),
        "prompts/fewshot/one.txt": b"1+1=2\n",
    }


def edit(
    repo: HarnessRepo,
    run_id: str,
    files: Mapping[str, bytes],
    iteration: int,
    event: int,
    *,
    rationale: str | None = None,
    when: float | None = None,
    parent: str | None = None,
) -> str:
    """One harness edit the way the orchestrator records it."""
    return repo.commit(
        run_id,
        files,
        message=rationale or f"{run_id} edit {iteration}",
        trailers={"Sia-Iteration": str(iteration), "Sia-Event": str(event)},
        when=T0 + 60 * iteration if when is None else when,
        parent=parent,
    )
