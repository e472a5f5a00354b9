"""``nbflow run FILE.py:FLOW``: run a ``@flow`` from a Python file and record it.

The file is imported as a module (its directory first on ``sys.path``, so sibling imports
work), the flow is found by attribute name, ``-p`` values are parsed as JSON when they
parse (else kept as strings) and validated through :meth:`Flow.validate_parameters`.
State changes print as they happen; the exit code is 0 only when the run completed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import json
import logging
import sys
import threading
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from nbflow.cli import EXIT_FAILED, EXIT_OK, UsageError
from nbflow.cli._output import format_duration, short_id, store_location
from nbflow.exceptions import ParameterError
from nbflow.settings import get_settings
from nbflow.states import State, StateType

if TYPE_CHECKING:
    from nbflow.engine.events import Event
    from nbflow.engine.flows import Flow

__all__ = ["load_flow", "parse_parameters", "register"]

EXIT_INTERRUPTED = 130


def register(subparsers: Any) -> None:
    """Add the ``run`` command."""
    parser = subparsers.add_parser(
        "run",
        help="run a @flow from a Python file and record it",
        description="Run a @flow defined in a Python file in this process and record the "
        "run in the store (the embedded store, or the server when NBFLOW_API_URL is set).",
        epilog="example: nbflow run examples/hello_flow.py:hello -p name=world -p n=3",
    )
    parser.add_argument(
        "target",
        metavar="FILE.py[:FLOW] | NOTEBOOK.ipynb",
        help="the file and the flow's attribute name in it (optional when the file has one "
        "flow), or a notebook to execute through a runner",
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a flow parameter; VALUE is read as JSON when it parses (3, true, [1,2], "
        '{"a":1}), else as a string; repeat for several',
    )
    parser.add_argument(
        "--params",
        metavar="JSON",
        help="parameters as one JSON object (-p values override it), e.g. '{\"n\": 3}'",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only the final state and the run id"
    )
    from nbflow.cli.notebook_run import add_notebook_options

    add_notebook_options(parser)  # notebooks only: -f, --runner, -j, --detach
    # Everything is in the store when handle() returns: skip the interpreter's teardown.
    parser.set_defaults(handler=handle, prog=parser.prog, exit_without_teardown=True)


# -- loading -------------------------------------------------------------------------------


def split_target(target: str) -> tuple[Path, str | None]:
    """Split ``path/to/file.py:flow`` into the path and the attribute name (or None)."""
    path_text, sep, attr = target.rpartition(":")
    if not sep or not path_text or "/" in attr or "\\" in attr:
        path_text, attr = target, ""
    path = Path(path_text)
    if path.suffix != ".py":
        raise UsageError(
            f"{target!r}: expected FILE.py:FLOW, e.g. examples/hello_flow.py:hello "
            "(notebooks: nbflow execute)"
        )
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    return path, attr or None


def _import_file(path: Path) -> ModuleType:
    """Import ``path`` as a module whose directory is first on ``sys.path``."""
    path = path.resolve()
    name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else None
    name = name or f"_nbflow_flow_file_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    # Registered before running it so pickling and dataclasses can find the module.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        traceback.print_exc()
        raise UsageError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from exc
    return module


def _flows_in(module: ModuleType) -> dict[str, Flow[Any, Any]]:
    from nbflow.engine.flows import Flow

    return {attr: obj for attr, obj in vars(module).items() if isinstance(obj, Flow)}


def load_flow(target: str) -> Flow[Any, Any]:
    """Return the flow that ``FILE.py[:FLOW]`` names, with an error listing the file's flows."""
    path, attr = split_target(target)
    module = _import_file(path)
    flows = _flows_in(module)
    if not flows:
        raise UsageError(f"{path} defines no @flow; decorate a function with @nbflow.flow")
    if attr is None:
        if len(flows) == 1:
            return next(iter(flows.values()))
        raise UsageError(
            f"{path} defines several flows ({', '.join(sorted(flows))}); "
            f"name one: {path}:{sorted(flows)[0]}"
        )
    if attr in flows:
        return flows[attr]
    by_name = [f for f in flows.values() if f.name == attr]
    if len(by_name) == 1:
        return by_name[0]
    raise UsageError(f"{path} has no flow {attr!r}; its flows are: {', '.join(sorted(flows))}")


# -- parameters ----------------------------------------------------------------------------


def parse_parameters(pairs: list[str], params_json: str | None = None) -> dict[str, Any]:
    """Return ``KEY=VALUE`` pairs as a dict, values read as JSON when they parse."""
    params: dict[str, Any] = {}
    if params_json is not None:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--params is not valid JSON ({exc.msg}): {params_json!r}") from None
        if not isinstance(loaded, dict):
            raise UsageError(
                f"--params must be a JSON object like '{{\"n\": 3}}', not {params_json!r}"
            )
        params.update(loaded)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"-p {pair!r}: expected KEY=VALUE, e.g. -p n=3")
        try:
            params[key] = json.loads(text)
        except json.JSONDecodeError:
            params[key] = text
    return params


# -- running -------------------------------------------------------------------------------


class _StatePrinter(logging.Handler):
    """Print state changes and run logs as they happen (called from engine threads).

    Subscribed to :mod:`nbflow.engine.events` for states and attached to the run logger
    (``nbflow.runs``) for the records of ``get_run_logger()``.
    """

    def __init__(self, quiet: bool) -> None:
        super().__init__(logging.INFO)
        self.quiet = quiet
        self.flow_run_id: UUID | None = None
        self.flow_state: State | None = None
        self._task_labels: dict[UUID, str] = {}
        self._print_lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        """Print a flow-run or task-run state change."""
        from nbflow.engine.events import FlowRunEvent

        with self._print_lock:
            if isinstance(event, FlowRunEvent):
                if self.flow_run_id is None:
                    self.flow_run_id = event.flow_run_id
                if event.flow_run_id == self.flow_run_id:
                    self.flow_state = event.state
                label = f"flow run {short_id(event.flow_run_id)}"
                self._line(event.state.timestamp, label, self._describe(event.state))
            else:
                task_run = event.task_run
                label = f"task {task_run.name}-{task_run.dynamic_key}"
                self._task_labels[task_run.id] = label
                text = self._describe(event.state)
                if event.state.is_terminal and task_run.start_time is not None:
                    took = (event.state.timestamp - task_run.start_time).total_seconds()
                    text += f" ({format_duration(took)})"
                self._line(event.state.timestamp, label, text)

    def emit(self, record: logging.LogRecord) -> None:
        """Print a run log record under the task (or flow run) that logged it."""
        try:
            task_run_id = getattr(record, "task_run_id", None)
            flow_run_id = getattr(record, "flow_run_id", None)
            with self._print_lock:
                if task_run_id in self._task_labels:
                    label = self._task_labels[task_run_id]
                elif flow_run_id is not None:
                    label = f"flow run {short_id(flow_run_id)}"
                else:
                    label = record.name
                level = "" if record.levelno == logging.INFO else f"{record.levelname} "
                moment = datetime.fromtimestamp(record.created, UTC)
                self._line(moment, label, f"| {level}{record.getMessage()}")
        except Exception:
            self.handleError(record)

    @staticmethod
    def _describe(state: State) -> str:
        if state.message and state.type in (StateType.FAILED, StateType.CRASHED):
            return f"{state.name}: {state.message.splitlines()[0]}"
        if state.name == "AwaitingRetry" and state.scheduled_time is not None:
            wait = (state.scheduled_time - state.timestamp).total_seconds()
            return f"{state.name} (in {format_duration(max(wait, 0.0))})"
        return state.name

    def _line(self, moment: datetime, what: str, text: str) -> None:
        if not self.quiet:
            print(f"{moment.astimezone():%H:%M:%S}  {what}  {text}", flush=True)


def _call(flow: Flow[Any, Any], params: dict[str, Any]) -> Any:
    result = flow(**params)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    return result


def handle(args: argparse.Namespace) -> int:
    """Run the flow, print its states, and report where the run is recorded."""
    if args.target.endswith(".ipynb"):
        from nbflow.cli.notebook_run import run_notebook

        return run_notebook(args)
    from nbflow.client import get_client
    from nbflow.engine import events

    flow = load_flow(args.target)
    raw = parse_parameters(args.param, args.params)
    try:
        params = flow.validate_parameters(raw)
    except ParameterError as exc:
        raise UsageError(f"flow {flow.name!r}: invalid parameter {exc}") from None

    printer = _StatePrinter(args.quiet)
    unsubscribe = events.subscribe(printer)
    run_logger = logging.getLogger("nbflow.runs")
    run_logger.addHandler(printer)
    error: BaseException | None = None
    result: Any = None
    try:
        result = _call(flow, params)
    except KeyboardInterrupt as exc:
        error = exc
    except Exception as exc:
        error = exc
    finally:
        unsubscribe()
        run_logger.removeHandler(printer)

    if printer.flow_run_id is None:
        if error is not None:
            raise error
        raise UsageError(f"flow {flow.name!r} returned without starting a flow run")

    run = get_client().read_flow_run(printer.flow_run_id)
    state = run.state or printer.flow_state
    if error is not None and not isinstance(error, KeyboardInterrupt) and not args.quiet:
        traceback.print_exception(error, file=sys.stderr)
    state_name = state.name if state else "unknown"
    duration = format_duration(run.total_run_time) if run.total_run_time else "-"
    print(f"flow run {run.name!r} ({flow.name}) finished {state_name} in {duration}")
    if state and state.message and state.type != StateType.COMPLETED:
        print(f"  message: {state.message.splitlines()[0]}")
    if error is None and result is not None and not args.quiet:
        text = repr(result)
        print(f"  result:  {text if len(text) <= 200 else text[:197] + '...'}")
    print(f"  run id:  {run.id}")
    print(f"  store:   {store_location(get_settings())}")
    print(f"  inspect: nbflow runs show {short_id(run.id)}")
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    completed = state is not None and state.type == StateType.COMPLETED
    return EXIT_OK if completed and error is None else EXIT_FAILED
