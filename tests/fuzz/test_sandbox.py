"""The sandbox itself: every way a case can go wrong is seen, and no process outlives it.

The fuzz properties are only as strong as this: a crash must be a Crashed outcome
(not a dead test run), a hang a Hung one, an allocation past the cap a MemoryError
the properties reject, and a foreign exception distinguishable from ours.
"""

from __future__ import annotations

from tests.processes import worker_children

from ._sandbox import Crashed, Hung, Raised, Returned, Sandbox


def test_every_failure_is_an_outcome_and_the_child_is_replaced() -> None:
    before = set(worker_children())  # the session's own sandbox may be running
    box = Sandbox()
    try:
        first = box.run("self-test", "pid", timeout=30)
        assert isinstance(first, Returned)

        crashed = box.run("self-test", "segfault", timeout=30)
        assert isinstance(crashed, Crashed) and crashed.exitcode == -11

        hung = box.run("self-test", "hang", timeout=0.5)
        assert isinstance(hung, Hung) and hung.timeout == 0.5

        memory = box.run("self-test", "allocate", timeout=30)
        assert isinstance(memory, Raised) and memory.memory and not memory.typed

        foreign = box.run("self-test", "foreign", timeout=30)
        assert isinstance(foreign, Raised) and not foreign.typed and not foreign.memory
        assert foreign.type_name == "builtins.KeyError" and "not ours" in foreign.traceback

        typed = box.run("self-test", "typed", timeout=30)
        assert isinstance(typed, Raised) and typed.typed and typed.image_id == "fuzz:case"

        # A fresh child after the crash and after the hang; the last one still serves.
        last = box.run("self-test", "pid", timeout=30)
        assert isinstance(last, Returned) and last.value != first.value
        assert box.starts == 3
    finally:
        box.close()
    assert set(worker_children()) <= before, worker_children()
