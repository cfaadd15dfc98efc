"""A stop signal becomes a KeyboardInterrupt only where one can be raised safely.

Each case runs a real Python process that signals itself while the main thread is in
the unsafe place, which must run to its end; the interrupt must come after it, be caught,
and the process exit 130.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from sia.stopping import StopSignals

_PROLOGUE = """
import os, signal, sys, threading
from sia.stopping import stop_signals

def send_soon(signum=signal.SIGINT):
    threading.Timer(0.2, os.kill, (os.getpid(), signum)).start()

def stopped_after(stop, unsafe):
    try:
        unsafe()
        threading.Event().wait(5)
    except KeyboardInterrupt as interrupt:
        print("interrupted after it:", interrupt, flush=True)
        sys.exit(130)
    print("never interrupted", flush=True)
    sys.exit(1)
"""

_CASES = {
    # A KeyboardInterrupt leaving exec() of a string makes CPython kill the process with
    # SIGINT at exit, however it was handled.
    "exec of a string": """
SOURCE = '''
import time
end = time.monotonic() + 1
while time.monotonic() < end:
    pass
print("exec finished", flush=True)
'''

with stop_signals() as stop:
    send_soon()
    stopped_after(stop, lambda: exec(SOURCE))
""",
    # One raised in a finalizer is printed and dropped.
    "a finalizer": """
import time

class Slow:
    def __del__(self):
        end = time.monotonic() + 1
        while time.monotonic() < end:
            pass
        print("finalizer finished", flush=True)

with stop_signals() as stop:
    send_soon(signal.SIGTERM)
    stopped_after(stop, Slow)
""",
}


def _run(folder, source: str) -> subprocess.CompletedProcess:
    # A module run with -m, as `python -m sia.cli` runs: a program given as a file or with
    # -c exits on SystemExit before CPython looks at how an interrupt went.
    (folder / "program.py").write_text(textwrap.dedent(_PROLOGUE) + textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), str(folder)])}
    return subprocess.run(
        [sys.executable, "-m", "program"], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("place", sorted(_CASES))
def test_a_signal_in_an_unsafe_place_interrupts_what_follows(tmp_path, place):
    done = _run(tmp_path, _CASES[place])
    assert done.returncode == 130, (done.returncode, done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert lines[0].endswith("finished")  # the unsafe code ran to its end
    assert lines[1].startswith("interrupted after it:")
    assert "Exception ignored" not in done.stderr


def test_without_it_the_same_places_go_wrong(tmp_path):
    """The cases above are the failures they claim to prevent, under Python's handlers."""
    plain = {
        name: source.replace("with stop_signals() as stop:", "if True:\n    stop = None")
        for name, source in _CASES.items()
    }
    signal_exit = _run(tmp_path, plain["exec of a string"])
    lost = _run(tmp_path, plain["a finalizer"].replace("send_soon(signal.SIGTERM)", "send_soon()"))
    assert signal_exit.returncode == -2  # killed by SIGINT, not the 130 asked for
    assert lost.returncode == 1 and "never interrupted" in lost.stdout
    assert "Exception ignored" in lost.stderr


def test_a_stop_is_remembered_and_ignored_once_closed():
    stop = StopSignals()
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        stop.handle(15, sys._getframe())
    assert stop.requested() == "SIGTERM"
    stop.close()
    stop.handle(2, sys._getframe())  # after the command: nothing raised
    assert stop.requested() == "SIGTERM"
