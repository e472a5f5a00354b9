"""The pool of executors started ahead (``nbflow.runners.standby``), without a server.

Real ``nbflow execute --standby`` processes; waits poll with generous deadlines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nbflow.runners.processes import descendants
from nbflow.runners.standby import StandbyPool, available_memory_mb
from nbflow.runners.subprocess import SubprocessJobVariables, SubprocessRunner

pytestmark = pytest.mark.slow


def _until(check: Callable[[], object], what: str, deadline: float = 120.0) -> object:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what}")


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_a_standby_from_before_an_environment_change_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = StandbyPool(1)
    try:
        pool.fill()
        (old,) = pool.idle
        monkeypatch.setenv("NBFLOW_TEST_CHANGED_AFTER_START", "1")
        assert pool.take() is None, "handed out an executor with a stale environment"
        fresh = _until(lambda: [p for p in pool.idle if p != old], "a fresh executor")
        assert isinstance(fresh, list)
        taken = pool.take()
        assert taken is not None and taken.popen.pid == fresh[0]
        assert taken.env["NBFLOW_TEST_CHANGED_AFTER_START"] == "1"
        assert taken.popen.stdin is not None
        taken.popen.stdin.close()  # no run for it: it stops its kernel and exits
        assert taken.popen.wait(60) == 0
        _until(lambda: not _running(old), "the stale executor to exit")
    finally:
        pool.close()


def test_close_leaves_no_process() -> None:
    pool = StandbyPool(2)
    pool.fill()
    pids = pool.idle
    assert len(pids) == 2
    _until(lambda: all(descendants(p) for p in pids), "both kernels")
    everything = {p for pid in pids for p in (pid, *descendants(pid))}
    pool.close()
    assert pool.idle == []
    _until(lambda: not any(_running(p) for p in everything), "every process to exit")
    pool.fill()  # closed: starts nothing
    assert pool.idle == []


def test_low_memory_starts_nothing_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    available = available_memory_mb()
    assert available is not None and available > 0
    caplog.set_level(logging.INFO, "nbflow.runners.standby")
    pool = StandbyPool(1, min_available_mb=available * 1000)
    pool.fill()
    pool.fill()
    assert pool.idle == []
    warnings = [
        r.getMessage() for r in caplog.records if "below the pool's minimum" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings  # said once, not at every refill
    pool.close()


@pytest.mark.parametrize(
    ("variables", "reason"),
    [
        ({"python": "python3"}, "job variable python chooses the interpreter"),
        ({"env": {"PYTHONPATH": "/elsewhere"}}, "env variable PYTHONPATH"),
        ({"env": {"LD_LIBRARY_PATH": "/elsewhere"}}, "env variable LD_LIBRARY_PATH"),
        ({"env": {"LANG": "xx_XX.UTF-8"}}, "env variable LANG"),
        ({"env": {"MY_SETTING": "1"}}, None),
        ({"working_dir": "/tmp"}, None),
    ],
)
def test_which_runs_start_cold(variables: dict[str, object], reason: str | None) -> None:
    runner = SubprocessRunner()
    config = SubprocessJobVariables.model_validate(variables)
    found = runner.cold_start_reason(config)
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.startswith(reason)
