"""Caching: hits give Cached, expiration, keys follow inputs and source, results persist."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
import pytest

from nbflow import flow, task
from nbflow.client.embedded import EmbeddedClient
from nbflow.engine import FlowRunEngine, TaskOptions
from nbflow.engine.fingerprint import Unfingerprintable, fingerprint
from nbflow.engine.results import ResultStore
from nbflow.schemas import FlowRunFilter, TaskRunFilter

calls: list[int] = []


@task(cache_policy="inputs")
def square(x: int) -> int:
    calls.append(x)
    return x * x


def state_names(store: EmbeddedClient) -> list[str]:
    trs = sorted(store.read_task_runs(TaskRunFilter()), key=lambda t: t.created)
    return [t.state.name for t in trs if t.state]


def test_hit_gives_cached_and_key_follows_inputs(store: EmbeddedClient, tmp_path: Path) -> None:
    calls.clear()

    @flow
    def cached_flow(x: int) -> int:
        return square(x) + square.submit(x).result()

    assert cached_flow(3) == 18
    assert calls == [3]  # the submitted run was a hit
    assert cached_flow(4) == 32
    assert calls == [3, 4]  # new input, new key
    assert state_names(store) == ["Completed", "Cached", "Completed", "Cached"]
    trs = store.read_task_runs(TaskRunFilter())
    keys = {t.cache_key for t in trs}
    assert len(keys) == 2 and None not in keys
    # The results are files under the default result store (NBFLOW_HOME/results).
    assert {p.name for p in (tmp_path / "results").iterdir()} == keys


def test_key_changes_when_source_changes(store: EmbeddedClient) -> None:
    def plus_one(x: int) -> int:
        return x + 1

    def plus_two(x: int) -> int:
        return x + 2

    @flow
    def sources() -> None:
        for fn in (plus_one, plus_two):
            task(cache_policy="inputs")(fn)(1)

    sources()
    keys = [t.cache_key for t in store.read_task_runs(TaskRunFilter())]
    assert len(keys) == 2 and len(set(keys)) == 2


def test_expiration(store: EmbeddedClient) -> None:
    runs: list[int] = []

    @task(cache_policy="inputs", cache_expiration=timedelta(seconds=0.3))
    def short_lived(x: int) -> int:
        runs.append(x)
        return x

    @flow
    def expiring() -> None:
        short_lived(1)
        short_lived(1)
        time.sleep(0.5)
        short_lived(1)

    expiring()
    assert runs == [1, 1]
    assert state_names(store) == ["Completed", "Cached", "Completed"]
    first = sorted(store.read_task_runs(TaskRunFilter()), key=lambda t: t.created)[0]
    assert first.cache_expiration is not None


def test_cache_key_fn_and_fsspec_storage(store: EmbeddedClient, tmp_path: Path) -> None:
    seen: list[str] = []

    def by_name(ctx: object, parameters: dict[str, object]) -> str:
        seen.append(type(ctx).__name__)
        return f"greeting-{parameters['name']}"

    storage = f"file://{tmp_path / 'elsewhere'}"

    @task(cache_key_fn=by_name, result_storage=storage)
    def greet(name: str) -> str:
        return f"hello {name}"

    @flow
    def greeter() -> list[str]:
        return [greet("a"), greet("a")]

    assert greeter() == ["hello a", "hello a"]
    assert seen == ["TaskRunContext", "TaskRunContext"]
    assert (tmp_path / "elsewhere" / "greeting-a").exists()
    assert state_names(store) == ["Completed", "Cached"]
    # A URL store goes through fsspec.
    memory = ResultStore("memory://nbflow-test")
    memory.write("k", {"v": 1})
    record = memory.read("k")
    assert record is not None and record.value == {"v": 1}


def test_explicit_cache_key_with_engine_and_on_cache_hit(store: EmbeddedClient) -> None:
    restored: list[object] = []
    options = TaskOptions(name="cell")
    for _ in range(2):
        engine = FlowRunEngine.start(flow_name="nb", mode="interactive")
        with engine.activate():
            run, state, result = engine.run_task(
                lambda: {"b": 42},
                options=options,
                task_key="cell-1",
                inputs=["a"],
                outputs=["b"],
                cache_key="cell-1-abc",
                on_cache_hit=restored.append,
            )
        assert result == {"b": 42}
        engine.finish()
    assert state.name == "Cached"
    assert restored == [{"b": 42}]
    assert run.inputs == ["a"] and run.outputs == ["b"]


def test_results_reload_in_a_new_process(store: EmbeddedClient, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from nbflow import flow, task

        @task(cache_policy="inputs")
        def expensive(x):
            print("computed", flush=True)
            return {"x": x, "data": list(range(5))}

        @flow
        def reuse():
            return expensive(7)

        print(reuse())
        """
    )
    path = tmp_path / "reuse.py"
    path.write_text(script)
    env = {"NBFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    outputs = [
        subprocess.run(
            [sys.executable, str(path)], env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert outputs[0].startswith("computed")
    assert "computed" not in outputs[1]
    assert "'data': [0, 1, 2, 3, 4]" in outputs[1]
    assert state_names(store) == ["Completed", "Cached"]


def test_flow_persist_result_default_applies_to_its_tasks(
    store: EmbeddedClient, tmp_path: Path
) -> None:
    target = tmp_path / "flow-results"

    @task
    def plain() -> str:
        return "kept"

    @flow(persist_result=True, result_storage=str(target))
    def persisting() -> str:
        return plain()

    assert persisting() == "kept"
    (tr,) = store.read_task_runs(TaskRunFilter())
    assert tr.state is not None and tr.state.data["result_key"] == str(tr.id)
    record = ResultStore(str(target)).read(str(tr.id))
    assert record is not None and record.value == "kept"


# -- stable keys: fingerprints, not pickle bytes ------------------------------------------
SEEDED_FLOW = textwrap.dedent(
    """
    from nbflow import flow, task

    @task(cache_policy="inputs")
    def count(names: set[str]) -> int:
        print("computed", flush=True)
        return len(names)

    @flow
    def tally() -> int:
        return count({f"name-{i}" for i in range(40)})

    print("result", tally())
    """
)


def test_set_of_strings_hits_the_cache_across_hash_seeds(
    store: EmbeddedClient, tmp_path: Path
) -> None:
    """Two processes with different PYTHONHASHSEED share one store and result directory."""
    path = tmp_path / "tally.py"
    path.write_text(SEEDED_FLOW)
    outputs = []
    for seed in ("1", "2"):
        env = {"NBFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, str(path)], env=env, capture_output=True, text=True, check=True
        )
        outputs.append(done.stdout)
    assert outputs[0].splitlines() == ["computed", "result 40"]
    assert outputs[1].splitlines() == ["result 40"]
    assert state_names(store) == ["Completed", "Cached"]
    keys = {t.cache_key for t in store.read_task_runs(TaskRunFilter())}
    assert len(keys) == 1 and None not in keys


def test_unfingerprintable_input_runs_uncached_with_a_warning_naming_it(
    store: EmbeddedClient,
) -> None:
    runs: list[int] = []

    @task(cache_policy="inputs")
    def locked(n: int, guard: Any) -> int:
        runs.append(n)
        return n

    @flow
    def guarded() -> None:
        lock = threading.Lock()
        locked(1, lock)
        locked(1, lock)

    guarded()
    assert runs == [1, 1]  # no cache hit, no guessed key
    assert state_names(store) == ["Completed", "Completed"]
    trs = store.read_task_runs(TaskRunFilter())
    assert all(t.cache_key is None for t in trs)
    assert all(t.state is not None and "result_key" not in t.state.data for t in trs)
    (run,) = store.read_flow_runs(FlowRunFilter())
    warnings = [log for log in store.read_logs(run.id).logs if log.level == 30]
    assert len(warnings) == 2
    assert {log.task_run_id for log in warnings} == {t.id for t in trs}
    message = warnings[0].message
    assert "guard" in message and "lock" in message and "not cached" in message


@dataclass
class Settings:
    """A plain user object: walked field by field, so a set inside it stays stable."""

    labels: set[str] = field(default_factory=lambda: {"x", "y", "z"})
    limit: int = 3


class Opaque:
    """An object with its own reduce: hashed through its pickle."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Opaque, (self.value,))


def _generator() -> Any:
    yield 1


def _nested(depth: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(depth):
        value = [value]
    return value


FINGERPRINTABLE: list[tuple[str, Any]] = [
    ("None", None),
    ("bool", True),
    ("int", 10**30),
    ("float", 1.5),
    ("complex", 1 + 2j),
    ("str", "héllo"),
    ("bytes", b"\x00\x01"),
    ("bytearray", bytearray(b"ab")),
    ("list", [1, "a", None]),
    ("tuple", (1, 2)),
    ("dict", {"a": [1, 2], "b": {"c": 3}}),
    ("set of str", {"alpha", "beta", "gamma"}),
    ("frozenset", frozenset({"a", 1})),
    ("nested set", {"k": [{"u", "v"}]}),
    ("function", _generator),
    ("lambda", lambda x: x + 1),
    ("type", Path),
    ("module", np),
    ("dataclass with a set", Settings()),
    ("custom reduce", Opaque(4)),
    ("datetime", datetime(2026, 1, 2, tzinfo=UTC)),
    ("date", date(2026, 1, 2)),
    ("Decimal", Decimal("1.10")),
    ("Path", Path("/tmp/x")),
    ("UUID", UUID(int=7)),
    ("numpy array", np.arange(6).reshape(2, 3)),
    ("pandas DataFrame", pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})),
]

UNFINGERPRINTABLE: list[tuple[str, Any]] = [
    ("lock", threading.Lock()),
    ("generator", _generator()),
    ("list holding a lock", [1, threading.Lock()]),
    ("dataclass holding a lock", Settings(labels={"a"}, limit=threading.Lock())),  # type: ignore[arg-type]
    ("too deep", _nested(40)),
]


@pytest.mark.parametrize(("label", "value"), FINGERPRINTABLE, ids=[r[0] for r in FINGERPRINTABLE])
def test_fingerprintable(label: str, value: Any) -> None:
    first = fingerprint(value, "arg")
    assert len(first) == 32 and first == fingerprint(value, "arg")


@pytest.mark.parametrize(
    ("label", "value"), UNFINGERPRINTABLE, ids=[r[0] for r in UNFINGERPRINTABLE]
)
def test_unfingerprintable(label: str, value: Any) -> None:
    with pytest.raises(Unfingerprintable) as info:
        fingerprint(value, "arg")
    assert info.value.name.startswith("arg")


def test_fingerprints_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """Sets, dicts holding sets and plain objects holding sets: same digest under any seed."""
    script = textwrap.dedent(
        """
        from dataclasses import dataclass, field
        from nbflow.engine.fingerprint import fingerprint

        @dataclass
        class Holder:
            tags: set = field(default_factory=lambda: {f"t{i}" for i in range(30)})

        values = [
            {f"s{i}" for i in range(30)},
            frozenset(f"f{i}" for i in range(30)),
            {"k": {f"v{i}" for i in range(30)}},
            Holder(),
            {b"a", b"b", b"c", b"d", b"e", b"f"},
        ]
        print(" ".join(fingerprint(v) for v in values))
        """
    )
    path = tmp_path / "prints.py"
    path.write_text(script)
    digests = {
        subprocess.run(
            [sys.executable, str(path)],
            env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("0", "1", "2", "3")
    }
    assert len(digests) == 1


def test_equal_values_share_a_key_and_different_values_do_not() -> None:
    assert fingerprint({"b", "a"}) == fingerprint({"a", "b"})
    assert fingerprint({"a", "b"}) != fingerprint({"a", "c"})
    assert fingerprint(Settings()) != fingerprint(Settings(limit=4))
    assert fingerprint(Settings()) != fingerprint({"labels": {"x", "y", "z"}, "limit": 3})
    assert fingerprint(1) != fingerprint(True) != fingerprint(1.0)
