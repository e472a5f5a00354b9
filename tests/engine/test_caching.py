"""Caching: hits give Cached, expiration, keys follow inputs and source, results persist."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

from nbflow import flow, task
from nbflow.client.embedded import EmbeddedClient
from nbflow.engine import FlowRunEngine, TaskOptions
from nbflow.engine.results import ResultStore
from nbflow.schemas import TaskRunFilter

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
