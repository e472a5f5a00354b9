"""``nbflow run FILE.py:FLOW``: states as they happen, exit codes, and what the store holds."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Runner = Callable[..., Any]
FlowFile = Callable[[str, str], Path]

PIPELINE = """
    from datetime import date

    from nbflow import flow, get_run_logger, task


    @task
    def double(x: int) -> int:
        return 2 * x


    @task
    def add(x: int, y: int) -> int:
        return x + y


    @flow(name="pipeline")
    def pipeline(n: int = 2, label: str = "x", day: date = date(2026, 1, 1)) -> str:
        get_run_logger().info("starting %s", label)
        futures = [double.submit(i) for i in range(n)]
        total = add(sum(f.result() for f in futures), 1)
        return f"{label}:{total}:{day.isoformat()}"


    @flow
    def other() -> None:
        return None
"""


def _run_id(out: str) -> str:
    match = re.search(r"run id:\s+([0-9a-f-]{36})", out)
    assert match, out
    return match.group(1)


def test_run_prints_states_and_records_the_run(nbflow: Runner, flow_file: FlowFile) -> None:
    path = flow_file("pipe.py", PIPELINE)
    result = nbflow(
        "run", f"{path}:pipeline", "-p", "n=3", "-p", "label=hi", "-p", "day=2026-02-03"
    )
    assert result.code == 0, result.err
    out = result.out
    assert re.search(r"flow run [0-9a-f]{8}  Running", out)
    assert re.search(r"task double-2  Completed", out)
    assert re.search(r"task add-0  Completed", out)
    assert "| starting hi" in out  # run logs are shown too
    assert "finished Completed" in out
    assert "result:  'hi:7:2026-02-03'" in out
    run_id = _run_id(out)
    assert f"inspect: nbflow runs show {run_id[:8]}" in out
    assert "store:   sqlite:///" in out

    (run,) = nbflow("runs", "ls", "--json").json()
    assert run["id"] == run_id
    assert run["state"]["type"] == "COMPLETED"
    assert run["flow_name"] == "pipeline"
    assert run["parameters"] == {"n": 3, "label": "hi", "day": "2026-02-03"}

    shown = nbflow("runs", "show", run_id[:6], "--json").json()
    assert [s["name"] for s in shown["states"]][-2:] == ["Running", "Completed"]
    names = sorted(f"{t['name']}-{t['dynamic_key']}" for t in shown["task_runs"])
    assert names == ["add-0", "double-0", "double-1", "double-2"]
    assert all(t["state"]["type"] == "COMPLETED" for t in shown["task_runs"])


def test_flow_name_is_optional_when_the_file_has_one_flow(
    nbflow: Runner, flow_file: FlowFile
) -> None:
    path = flow_file(
        "single.py",
        """
        from nbflow import flow

        @flow
        def only(word: str = "a") -> str:
            return word * 2
        """,
    )
    result = nbflow("run", str(path), "-p", "word=ab", "-q")
    assert result.code == 0, result.err
    assert "result" not in result.out  # --quiet
    assert "finished Completed" in result.out
    assert "Running" not in result.out


def test_run_resolves_the_file_relative_to_cwd_and_sibling_imports(
    nbflow: Runner, flow_file: FlowFile, tmp_path: Path
) -> None:
    flow_file("helpers.py", "FACTOR = 10\n")
    flow_file(
        "sib.py",
        """
        from helpers import FACTOR
        from nbflow import flow

        @flow
        def scaled(x: int = 1) -> int:
            return x * FACTOR
        """,
    )
    result = nbflow("run", "sib.py:scaled", "-p", "x=4", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "result:  40" in result.out


def test_params_json_and_p_override(nbflow: Runner, flow_file: FlowFile) -> None:
    path = flow_file("pipe.py", PIPELINE)
    result = nbflow(
        "run", f"{path}:pipeline", "--params", '{"n": 1, "label": "j"}', "-p", "label=k"
    )
    assert result.code == 0, result.err
    assert "result:  'k:1:2026-01-01'" in result.out


def test_a_failing_flow_exits_1_and_is_recorded_failed(nbflow: Runner, flow_file: FlowFile) -> None:
    path = flow_file(
        "bad.py",
        """
        from nbflow import flow, task

        @task(retries=1)
        def boom(x: int) -> int:
            raise ValueError(f"no good: {x}")

        @flow
        def broken() -> int:
            return boom(5)
        """,
    )
    result = nbflow("run", f"{path}:broken")
    assert result.code == 1
    assert "finished Failed" in result.out
    assert "ValueError: no good: 5" in result.err  # the traceback of the user's error
    assert re.search(r"task boom-0  AwaitingRetry", result.out)
    run_id = _run_id(result.out)

    (run,) = nbflow("runs", "ls", "--state", "failed", "--json").json()
    assert run["id"] == run_id
    shown = nbflow("runs", "show", run_id)
    assert shown.code == 0
    assert re.search(r"boom-0\s+Failed\s+\S+ \S+\s+\S+\s+2\b", shown.out), shown.out
    assert nbflow("runs", "ls", "--state", "completed", "--json").json() == []


def test_unknown_flow_lists_the_flows_in_the_file(nbflow: Runner, flow_file: FlowFile) -> None:
    path = flow_file("pipe.py", PIPELINE)
    result = nbflow("run", f"{path}:pipelin")
    assert result.code == 2
    assert result.err == (
        f"nbflow: error: {path} has no flow 'pipelin'; its flows are: other, pipeline\n"
    )
    assert nbflow("runs", "ls", "--json").json() == []


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("n=abc", ["'n'", "abc", "int"]),
        ("day=yesterday", ["'day'", "yesterday", "date"]),
        ("colour=red", ["colour"]),
    ],
)
def test_bad_parameter_names_field_value_and_type(
    nbflow: Runner, flow_file: FlowFile, param: str, expected: list[str]
) -> None:
    path = flow_file("pipe.py", PIPELINE)
    result = nbflow("run", f"{path}:pipeline", "-p", param)
    assert result.code == 2
    assert result.err.startswith("nbflow: error: flow 'pipeline': invalid parameter ")
    assert len(result.err.strip().splitlines()) == 1
    for text in expected:
        assert text.strip("'") in result.err
    assert nbflow("runs", "ls", "--json").json() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py:f"], "nbflow: error: missing.py: no such file\n"),
        (["run", "notes.ipynb:f"], "expected FILE.py:FLOW"),
        (["run", "pipe.py:pipeline", "-p", "novalue"], "-p 'novalue': expected KEY=VALUE"),
        (["run", "pipe.py:pipeline", "--params", "[1]"], "--params must be a JSON object"),
    ],
)
def test_usage_errors_exit_2(
    nbflow: Runner, flow_file: FlowFile, tmp_path: Path, args: list[str], message: str
) -> None:
    flow_file("pipe.py", PIPELINE)
    result = nbflow(*args, cwd=tmp_path)
    assert result.code == 2
    assert result.err.startswith("nbflow: error: ")
    assert message in result.err


def test_a_file_without_flows_and_a_file_that_raises(nbflow: Runner, flow_file: FlowFile) -> None:
    empty = flow_file("empty.py", "x = 1\n")
    result = nbflow("run", str(empty))
    assert result.code == 2
    assert "defines no @flow" in result.err
    raising = flow_file("raising.py", "raise RuntimeError('at import')\n")
    result = nbflow("run", str(raising))
    assert result.code == 2
    assert result.err.strip().splitlines()[-1] == (
        f"nbflow: error: {raising}: importing it raised RuntimeError: at import"
    )


def test_the_example_flow_runs_and_caches(nbflow: Runner) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "hello_flow.py"
    first = nbflow("run", f"{example}:hello", "-p", "name=test", "-p", "n=4")
    assert first.code == 0, first.err + first.out
    assert "The sum of squares below 4 is 14." in first.out
    second = nbflow("run", f"{example}:hello", "-p", "name=test", "-p", "n=2")
    assert second.code == 0, second.err
    assert "task greeting-0  Cached" in second.out
    shown = nbflow("runs", "show", _run_id(second.out))
    assert "1 cache hit(s)" in shown.out


def test_ctrl_c_records_the_run_cancelled_and_exits_130(
    nbflow: Runner, flow_file: FlowFile, nbflow_home: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    path = flow_file(
        "slow.py",
        """
        import time
        from nbflow import flow, task

        @task
        def nap() -> None:
            print("napping", flush=True)
            time.sleep(60)

        @flow
        def slow() -> None:
            nap()
        """,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW_")}
    env["NBFLOW_HOME"] = str(nbflow_home)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "nbflow"), "run", f"{path}:slow"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "napping":
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "finished Cancelled" in out
    (run,) = nbflow("runs", "ls", "--json").json()
    assert run["state"]["type"] == "CANCELLED"


def test_the_process_ends_without_teardown_but_loses_nothing(
    nbflow: Runner, flow_file: FlowFile, tmp_path: Path
) -> None:
    """``nbflow run`` skips the interpreter's teardown: atexit, output and store stay whole."""
    marker = tmp_path / "atexit.txt"
    waited = tmp_path / "thread.txt"
    path = flow_file(
        "ends.py",
        f"""
        import atexit
        import sys
        import threading
        import time

        from nbflow import flow, get_run_logger, task

        atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))

        def late() -> None:
            time.sleep(0.3)
            open({str(waited)!r}, "w").write("done")

        @task
        def step(i: int) -> int:
            return i

        @flow
        def many(start_thread: bool = False) -> int:
            if start_thread:
                threading.Thread(target=late).start()  # not a daemon: the exit waits
            get_run_logger().info("logged")
            sys.stdout.write("unflushed " * 2000)  # buffered, no newline: flushed at exit
            return sum(step(i) for i in range(200))
        """,
    )
    result = nbflow("run", f"{path}:many")
    assert result.code == 0, result.err
    assert result.out.count("unflushed") == 2000
    assert "finished Completed" in result.out
    assert marker.read_text() == "ran"
    shown = nbflow("runs", "show", _run_id(result.out), "--json").json()
    assert len(shown["task_runs"]) == 200
    assert all(t["state"]["type"] == "COMPLETED" for t in shown["task_runs"])

    result = nbflow("run", f"{path}:many", "-p", "start_thread=true")
    assert result.code == 0, result.err
    assert waited.read_text() == "done"
