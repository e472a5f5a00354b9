"""``nbflow notify`` in subprocesses: against a live server, and on the embedded store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.live_server import LiveServer

NBFLOW = Path(sys.executable).parent / "nbflow"
Run = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.slow


def _runner(env: dict[str, str]) -> Run:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(NBFLOW), "notify", *args], env=env, capture_output=True, text=True, timeout=120
        )

    return run


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("notify-cli")) as live:
        yield live


@pytest.fixture(params=["server", "embedded"])
def nbflow_notify(
    request: pytest.FixtureRequest, tmp_path: Path, server: LiveServer
) -> Iterator[Run]:
    if request.param == "server":
        env = server.env
        yield _runner(env)
        for rule in json.loads(_runner(env)("ls", "--json").stdout):
            _runner(env)("rm", rule["id"])
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW")}
    env["NBFLOW_HOME"] = str(tmp_path / "home")
    yield _runner(env)


def test_add_list_deliveries_remove(nbflow_notify: Run) -> None:
    added = nbflow_notify(
        "add", "--on", "FAILED,crashed", "--webhook", "https://hooks.example.com/x", "--slack",
        "--deployment", "nightly", "--longer-than", "1h30m", "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    rule = json.loads(added.stdout)
    assert rule["on_states"] == ["FAILED", "CRASHED"]
    assert (rule["match_kind"], rule["match_value"]) == ("deployment", "nightly")
    assert rule["longer_than_seconds"] == 5400
    assert rule["webhook_slack"] is True

    listed = nbflow_notify("ls", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [rule["id"]]
    table = nbflow_notify("ls")
    assert rule["id"] in table.stdout and "deployment nightly" in table.stdout
    assert "FAILED,CRASHED,>5400s" in table.stdout

    deliveries = nbflow_notify("deliveries", rule["id"][:8], "--json")
    assert deliveries.returncode == 0, deliveries.stderr
    assert json.loads(deliveries.stdout) == []
    assert "no deliveries yet" in nbflow_notify("deliveries").stdout

    disabled = nbflow_notify("disable", rule["id"][:8])
    assert disabled.returncode == 0, disabled.stderr
    assert "disabled" in disabled.stdout
    assert json.loads(nbflow_notify("ls", "--json").stdout)[0]["enabled"] is False
    assert nbflow_notify("enable", rule["id"]).returncode == 0
    assert json.loads(nbflow_notify("ls", "--json").stdout)[0]["enabled"] is True

    removed = nbflow_notify("rm", rule["id"][:8])
    assert removed.returncode == 0, removed.stderr
    assert json.loads(nbflow_notify("ls", "--json").stdout) == []
    again = nbflow_notify("rm", rule["id"])
    assert again.returncode == 1
    assert "no notification rule" in again.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--on", "FAIL", "--webhook", "https://x.test/h"], ["--on", "'FAIL'", "FAILED"]),
        (["--on", "FAILED", "--webhook", "ftp://x.test/h"], ["--webhook", "http(s)"]),
        (["--on", "FAILED", "--email", "ops-at-x"], ["--email", "'ops-at-x'"]),
        (["--on", "FAILED", "--webhook", "https://x.test/h", "--longer-than=-5m"],
         ["--longer-than", "'-5m'", "30m"]),
        (["--webhook", "https://x.test/h"], ["never fire"]),
        (["--on", "FAILED", "--email", "a@b.io", "--slack"], ["--slack", "--webhook"]),
    ],
)  # fmt: skip
def test_bad_rules_are_usage_errors_naming_the_option(
    nbflow_notify: Run, args: list[str], words: list[str]
) -> None:
    result = nbflow_notify("add", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    for word in words:
        assert word in result.stderr, result.stderr
    assert json.loads(nbflow_notify("ls", "--json").stdout) == []
