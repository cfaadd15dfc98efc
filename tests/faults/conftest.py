"""The fault ledger of this folder: every test injects faults and accounts for them.

A test takes the ``faults`` fixture, calls :meth:`Faults.inject` once per fault it causes,
and :meth:`Injection.account` with what it counted afterwards: events (or episode results)
the system should hold but does not (``lost``) and ones it holds more than once
(``duplicates``). An injection is *contained* when it was accounted for and its test
passed. The terminal summary adds them up; ``make faults`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

#: Every injection of this session, in order.
INJECTIONS: list[Injection] = []


@dataclass
class Injection:
    test: str
    name: str
    lost: int | None = None
    duplicates: int | None = None
    passed: bool = False

    def account(self, lost: int, duplicates: int) -> None:
        """Record what the recovery left; the test still asserts both are zero."""
        self.lost, self.duplicates = lost, duplicates

    @property
    def contained(self) -> bool:
        return self.passed and self.lost is not None


@dataclass
class Faults:
    test: str
    injections: list[Injection] = field(default_factory=list)

    def inject(self, name: str) -> Injection:
        injection = Injection(self.test, name)
        self.injections.append(injection)
        INJECTIONS.append(injection)
        return injection


@pytest.fixture
def faults(request: pytest.FixtureRequest) -> Faults:
    log = Faults(request.node.nodeid)
    request.node.stash[_KEY] = log
    return log


_KEY = pytest.StashKey[Faults]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    log = item.stash.get(_KEY, None)
    if log is not None and report.when == "call":
        for injection in log.injections:
            injection.passed = report.passed
    return report


def summary(injections: list[Injection]) -> str:
    contained = sum(i.contained for i in injections)
    lost = sum(i.lost or 0 for i in injections)
    duplicates = sum(i.duplicates or 0 for i in injections)
    return (
        f"{len(injections)} faults injected, {contained} contained, "
        f"{lost} events lost, {duplicates} duplicates"
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not INJECTIONS:
        return
    terminalreporter.section("faults")
    for injection in INJECTIONS:
        if not injection.contained:
            why = "test failed" if not injection.passed else "never accounted for"
            line = f"not contained ({why}): {injection.name} in {injection.test}"
            terminalreporter.write_line(line)
    terminalreporter.write_line(summary(INJECTIONS))
