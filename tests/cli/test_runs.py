"""``nbflow runs ls`` and ``nbflow runs show`` over runs made by ``nbflow run``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

Runner = Callable[..., Any]
FlowFile = Callable[[str, str], Path]

FLOWS = """
    from nbflow import flow, task

    @task
    def one() -> int:
        return 1

    @flow
    def good(k: int = 0) -> int:
        return one() + k

    @flow
    def bad() -> None:
        raise RuntimeError("bad on purpose")
"""


def _seed(nbflow: Runner, flow_file: FlowFile) -> dict[str, list[str]]:
    path = flow_file("flows.py", FLOWS)
    ids: dict[str, list[str]] = {"good": [], "bad": []}
    for name, params in (("good", ["-p", "k=1"]), ("bad", []), ("good", ["-p", "k=2"])):
        result = nbflow("run", f"{path}:{name}", "-q", *params)
        match = re.search(r"run id:\s+(\S+)", result.out)
        assert match, result.out + result.err
        ids[name].append(match.group(1))
    return ids


def test_ls_table_filters_and_limit(nbflow: Runner, flow_file: FlowFile) -> None:
    ids = _seed(nbflow, flow_file)
    table = nbflow("runs", "ls")
    assert table.code == 0
    lines = table.out.strip().splitlines()
    assert lines[0].split() == ["ID", "NAME", "FLOW", "STATE", "START", "DURATION"]
    assert len(lines) == 4
    # Newest first.
    assert lines[1].startswith(ids["good"][1][:8])
    assert lines[2].startswith(ids["bad"][0][:8]) and " Failed " in lines[2]

    only_good = nbflow("runs", "ls", "--flow", "good", "--json").json()
    assert {r["id"] for r in only_good} == set(ids["good"])
    failed = nbflow("runs", "ls", "--state", "FAILED", "--json").json()
    assert [r["id"] for r in failed] == ids["bad"]
    by_name = nbflow("runs", "ls", "--state", "completed", "--state", "failed", "--json").json()
    assert len(by_name) == 3
    limited = nbflow("runs", "ls", "--limit", "1", "--json").json()
    assert [r["id"] for r in limited] == [ids["good"][1]]


def test_ls_on_an_empty_store(nbflow: Runner) -> None:
    result = nbflow("runs", "ls")
    assert result.code == 0
    assert result.out == ""
    assert "no flow runs in sqlite:///" in result.err


def test_show_details(nbflow: Runner, flow_file: FlowFile) -> None:
    ids = _seed(nbflow, flow_file)
    result = nbflow("runs", "show", ids["good"][0][:8], "--logs")
    assert result.code == 0, result.err
    out = result.out
    assert out.startswith(f"Flow run {ids['good'][0]}\n")
    assert re.search(r"state:\s+Completed", out)
    assert "k = 1" in out
    assert re.search(r"Running\n.*Completed", out)
    assert re.search(r"one-0\s+Completed", out)
    assert "0 cache hit(s), 0 task run(s) retried" in out

    bad = nbflow("runs", "show", ids["bad"][0])
    assert re.search(r"state:\s+Failed", bad.out)
    assert "bad on purpose" in bad.out


def test_show_unknown_and_malformed_ids(nbflow: Runner, flow_file: FlowFile) -> None:
    _seed(nbflow, flow_file)
    missing = nbflow("runs", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.code == 1
    assert missing.err == (
        "nbflow: error: flow run 00000000-0000-0000-0000-000000000000 not found\n"
    )
    assert nbflow("runs", "show", "zzz").code == 2
    assert nbflow("runs", "show", "-").code in (1, 2)
