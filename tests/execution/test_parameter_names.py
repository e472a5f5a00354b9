"""Parameter names become code in the injected cell: only identifiers may ever get there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nbflow.cli.notebook_run import launch
from nbflow.client.embedded import EmbeddedClient
from nbflow.exceptions import ParameterError
from nbflow.notebook import document as nbs
from nbflow.runners.subprocess import SubprocessRunner
from nbflow.schemas import Flow, FlowRunCreate
from nbflow.states import Pending, StateType

pytestmark = pytest.mark.slow


def test_injected_name_is_refused_and_nothing_runs(
    client: EmbeddedClient, write_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    # The reproduction: a schema stored without the server's check (the embedded
    # store) whose parameter name is code.  Before, `nbflow execute` injected
    # `x=1;import os;os.system('touch pwned')# = 1` and the kernel ran it.
    pwned = tmp_path / "pwned"
    name = f"x=1;import os;os.system('touch {pwned}')#"
    path = write_notebook("inj.ipynb", ["x = 0", "print(x)"], parameters=0)
    flow = client.create_flow(
        Flow(
            name="inj",
            parameters_schema={"type": "object", "properties": {name: {}, "x": {}}},
        )
    )
    # The lifecycle refuses such a run at creation (tests/orchestration/test_lifecycle.py);
    # written to the store directly, it shows the executor's own check still holds.
    run = client.store.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            parameters={name: 1},
            state=Pending(),
            notebook_path=str(path),
            mode="batch",
        )
    )
    runner = SubprocessRunner(client=client)
    infra = launch(client, run, runner)
    assert runner.wait(infra, timeout=240) == 1
    state = client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.FAILED
    assert state.message is not None and "is not a valid parameter name" in state.message
    assert not pwned.exists()


def test_injection_refuses_a_name_that_is_not_an_identifier() -> None:
    nb = nbs.new_notebook(["%%flow f\nx = 1", "print(x)"])
    with pytest.raises(ParameterError, match="is not a valid parameter name") as err:
        nbs.inject_parameters(nb, {"x = 1\nimport os": 1})
    assert err.value.field == "parameters.x = 1\nimport os"
    # Values stay literals, whatever they hold.
    out = nbs.inject_parameters(nb, {"x": "'; import os #"})
    assert nbs.cell_source(out["cells"][1]) == '# Parameters\nx = "\'; import os #"\n'


@pytest.mark.parametrize("name", ["class", "1x", "a-b", "a b", ""])
def test_keywords_and_non_identifiers_are_refused(name: str) -> None:
    schema = {"properties": {"x": {}}, "additionalProperties": True}
    with pytest.raises(ParameterError, match="is not a valid parameter name"):
        nbs.validate_parameters(schema, {name: 1})
