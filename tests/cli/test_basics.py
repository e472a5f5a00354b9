"""The command line itself: help, version, usage errors and exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbflow import __version__

Runner = Callable[..., Any]


def test_version_shows_versions_and_store(nbflow: Runner, nbflow_home: Path) -> None:
    result = nbflow("version")
    assert result.code == 0, result.err
    assert f"nbflow:  {__version__}" in result.out
    assert "Python:  3." in result.out
    assert f"sqlite:///{nbflow_home / 'nbflow.db'}" in result.out


def test_version_shows_server_url_and_hides_passwords(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "NBFLOW_HOME": str(tmp_path),
        "NBFLOW_DATABASE_URL": "postgresql://bob:s3cret@db:5432/nbflow",
    }
    out = subprocess.run(
        [sys.executable, "-m", "nbflow", "version"], env=env, capture_output=True, text=True
    ).stdout
    assert "postgresql://bob:***@db:5432/nbflow" in out
    assert "s3cret" not in out
    env["NBFLOW_API_URL"] = "http://localhost:8888/nbflow/api/v1/"
    out = subprocess.run(
        [sys.executable, "-m", "nbflow", "version"], env=env, capture_output=True, text=True
    ).stdout
    assert "store:   server http://localhost:8888/nbflow/api/v1" in out


def test_help_lists_every_command(nbflow: Runner) -> None:
    result = nbflow("--help")
    assert result.code == 0
    for command in ("run", "runs", "version"):
        assert f"    {command} " in result.out


def test_no_command_is_a_usage_error(nbflow: Runner) -> None:
    result = nbflow()
    assert result.code == 2
    assert result.err.startswith("nbflow: error: ")
    assert len(result.err.strip().splitlines()) == 1


def test_unknown_command_lists_the_commands(nbflow: Runner) -> None:
    result = nbflow("deploi")
    assert result.code == 2
    assert result.err.startswith(
        "nbflow: error: unknown command 'deploi'; the commands are: run, runs, version"
    )
    assert len(result.err.splitlines()) == 1


def test_unknown_option_points_at_the_subcommand_help(nbflow: Runner) -> None:
    result = nbflow("runs", "ls", "--bogus")
    assert result.code == 2
    assert result.err.strip() == (
        "nbflow: error: unrecognized arguments: --bogus (see 'nbflow runs ls --help')"
    )


def test_bad_option_value_is_a_usage_error(nbflow: Runner) -> None:
    result = nbflow("runs", "ls", "--limit", "lots")
    assert result.code == 2
    assert "--limit" in result.err and "'lots' is not a whole number" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_python_dash_m_runs_the_cli(nbflow_home: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nbflow", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"nbflow {__version__}"
