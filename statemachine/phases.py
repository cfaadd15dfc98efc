"""The loop's phases and the one table of legal transitions between them.

The table is declared once, with the ``transitions`` library, and compiled into a lookup
so that folding an event costs a dict access rather than a library call::

    PLAN ─begin_rollout→ ROLLOUT ─review→ FEEDBACK ─edit→ EDIT ─┐
      │                                      └─train→ TRAIN ─┴─evaluate→ EVAL ─plan_next→ PLAN
      └─evaluate_baseline→ EVAL (iteration 0 only)                        └─finish→ DONE
    any non-terminal phase ─fail→ FAILED
"""

from __future__ import annotations

from enum import StrEnum

from transitions import Machine, MachineError

from statemachine.errors import IllegalTransition

__all__ = ["TERMINAL", "TRANSITIONS", "Phase", "PhaseMachine", "Trigger", "check_transition"]


class Phase(StrEnum):
    PLAN = "PLAN"
    ROLLOUT = "ROLLOUT"
    FEEDBACK = "FEEDBACK"
    EDIT = "EDIT"
    TRAIN = "TRAIN"
    EVAL = "EVAL"
    DONE = "DONE"
    FAILED = "FAILED"


class Trigger(StrEnum):
    START = "start"  # enters the first PLAN; not a move between phases
    BEGIN_ROLLOUT = "begin_rollout"
    EVALUATE_BASELINE = "evaluate_baseline"
    REVIEW = "review"
    EDIT = "edit"
    TRAIN = "train"
    EVALUATE = "evaluate"
    PLAN_NEXT = "plan_next"
    FINISH = "finish"
    FAIL = "fail"


TERMINAL = frozenset({Phase.DONE, Phase.FAILED})

_LIVE = [p for p in Phase if p not in TERMINAL]

TRANSITIONS: tuple[tuple[Trigger, tuple[Phase, ...], Phase], ...] = (
    (Trigger.BEGIN_ROLLOUT, (Phase.PLAN,), Phase.ROLLOUT),
    (Trigger.EVALUATE_BASELINE, (Phase.PLAN,), Phase.EVAL),
    (Trigger.REVIEW, (Phase.ROLLOUT,), Phase.FEEDBACK),
    (Trigger.EDIT, (Phase.FEEDBACK,), Phase.EDIT),
    (Trigger.TRAIN, (Phase.FEEDBACK,), Phase.TRAIN),
    (Trigger.EVALUATE, (Phase.EDIT, Phase.TRAIN), Phase.EVAL),
    (Trigger.PLAN_NEXT, (Phase.EVAL,), Phase.PLAN),
    (Trigger.FINISH, (Phase.EVAL,), Phase.DONE),
    (Trigger.FAIL, tuple(_LIVE), Phase.FAILED),
)


class PhaseMachine:
    """A live view of the loop's phase, driven by :class:`Trigger` values.

    ``transitions`` owns the semantics (``auto_transitions=False`` so no ``to_X`` shortcuts
    exist); every misuse surfaces as :class:`IllegalTransition`.
    """

    def __init__(self, initial: Phase = Phase.PLAN) -> None:
        self.state: Phase = initial
        self._machine = Machine(
            model=self,
            states=Phase,
            transitions=[
                {"trigger": t.value, "source": list(src), "dest": dst}
                for t, src, dst in TRANSITIONS
            ],
            initial=initial,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )

    def fire(self, trigger: Trigger) -> Phase:
        name = Trigger(trigger).value
        try:
            self.trigger(name)  # type: ignore[attr-defined]
        except MachineError as exc:
            raise IllegalTransition(f"cannot {name} from {self.state.value}") from exc
        return self.state


def _compile() -> dict[tuple[Phase, Trigger], Phase]:
    """Read the legal moves back out of the ``transitions`` machine itself."""
    machine = PhaseMachine()._machine
    table: dict[tuple[Phase, Trigger], Phase] = {}
    for name, event in machine.events.items():
        for source, moves in event.transitions.items():
            for move in moves:
                table[(Phase[source], Trigger(name))] = Phase[move.dest]
    return table


_TABLE = _compile()


def check_transition(source: Phase | None, trigger: Trigger, dest: Phase) -> None:
    """Raise :class:`IllegalTransition` unless ``trigger`` moves ``source`` to ``dest``."""
    if source is None:
        if trigger is Trigger.START and dest is Phase.PLAN:
            return
        raise IllegalTransition(f"a run must start in PLAN, not {dest.value}")
    if _TABLE.get((source, trigger)) is not dest:
        raise IllegalTransition(
            f"illegal transition {source.value} --{trigger.value}--> {dest.value}"
        )
